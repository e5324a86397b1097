"""SynthesizeMe Studio: personalized LLM judges from a few preferences, and population insights."""
