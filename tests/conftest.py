"""Shared fixtures: a tokenizer trained once per session and tiny random models built from it."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tokenizer():
    """Byte-level BPE (vocabulary 1000) trained on stdlib docstrings, with the GRIT markers."""
    from gritkit.tiny import sample_corpus, train_tokenizer

    return train_tokenizer(sample_corpus(), vocab_size=1000)


@pytest.fixture(scope="session")
def corpus():
    from gritkit.tiny import sample_corpus

    return sample_corpus()


@pytest.fixture(scope="session")
def tiny_llama(tokenizer):
    """A random 2-layer, width-64 Llama GritLM (float32, CPU). Do not train it in place."""
    from gritkit.tiny import build_tiny_model

    return build_tiny_model("llama", tokenizer, hidden_size=64, num_layers=2, initializer_range=0.2)


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_llama, tmp_path_factory):
    """``tiny_llama`` saved with save_pretrained, for tests that load from disk."""
    path = tmp_path_factory.mktemp("models") / "tiny-llama"
    tiny_llama.save_pretrained(path)
    return path
