"""Tiny randomly initialised models for the local engine's fast tests (built here: no downloads); the fixtures over
them are in ``tests/lm_fixtures.py``.

The models run on CPU unless ``SYNTH_TEST_DEVICE`` names another device (a GPU check of the engine: fp32 there too).
"""

from __future__ import annotations

import os
import string

from synth.lm.engine import LocalEngine

TEST_DEVICE = os.environ.get("SYNTH_TEST_DEVICE", "cpu")
PROMPTS = [f"User: question {i} {'abc' * (i % 5)}?\n\nAssistant:" for i in range(16)]
SHARED = "System: you judge replies for one person. Read both and name the one they prefer.\n\n"


def build_tiny_model(directory, sliding_window: int | None = None) -> str:
    """A 2-layer Llama (or, with ``sliding_window``, a Gemma 3 whose first layer attends to that many tokens
    only) with a character vocabulary, saved like any Hugging Face checkpoint."""
    import torch
    from tokenizers import Tokenizer, decoders, models
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>"]
    characters = list(string.printable)
    vocab = {token: index for index, token in enumerate(specials + characters)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>")
    torch.manual_seed(0)
    shape = {"vocab_size": len(vocab), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512, "pad_token_id": 0,
             "bos_token_id": 1, "eos_token_id": 2}
    if sliding_window:
        model = Gemma3ForCausalLM(Gemma3TextConfig(**shape, head_dim=16, sliding_window=sliding_window,
                                                   layer_types=["sliding_attention", "full_attention"]))
    else:
        model = LlamaForCausalLM(LlamaConfig(**shape))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def reference_greedy(engine: LocalEngine, prompt: str, max_new_tokens: int) -> str:
    """One prompt through transformers' own generate: the semantics the engine must keep."""
    import torch

    network, tokenizer = engine.local_model.model, engine.local_model.tokenizer
    ids = torch.tensor([engine.prompts.encode(prompt)], device=network.device)
    output = network.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                              max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                              temperature=None, top_p=None, top_k=None)
    return tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True)
