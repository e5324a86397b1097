"""Tests never reach a model hub: everything runs on scripted LMs, the packaged Gemma GGUF and MiniLM."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
