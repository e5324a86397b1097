"""Gradio views of SynthesizeMe Studio (thin layers over the synth library)."""
