"""Shared fixtures: a tokenizer trained once per session, tiny random models built from it, and one
small data build (subsets of the shipped sources) that every test of data, evaluation and shipped
model reads."""

from __future__ import annotations

import json

import pytest
import torch

# Deterministic subsets of the shipped sources: big enough for every task, small enough to build in seconds.
SUBSET = {"debian": 900, "wordnet": 3000, "faq": 473, "stdlib": 400}

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tokenizer():
    """Byte-level BPE (vocabulary 1000) trained on stdlib docstrings, with the GRIT markers."""
    from gritkit.model.tiny import sample_corpus, train_tokenizer

    return train_tokenizer(sample_corpus(), vocab_size=1000)


@pytest.fixture(scope="session")
def corpus():
    from gritkit.model.tiny import sample_corpus

    return sample_corpus()


@pytest.fixture(scope="session")
def tiny_llama(tokenizer):
    """A random 2-layer, width-64 Llama GritLM (float32, CPU). Do not train it in place."""
    from gritkit.model.tiny import build_tiny_model

    return build_tiny_model("llama", tokenizer, hidden_size=64, num_layers=2, initializer_range=0.2)


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_llama, tmp_path_factory):
    """``tiny_llama`` saved with save_pretrained, for tests that load from disk."""
    path = tmp_path_factory.mktemp("models") / "tiny-llama"
    tiny_llama.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def small_sources(tmp_path_factory):
    """``SUBSET`` of each shipped source, written as a source directory for ``build``."""
    from gritkit.datasets.common import stable_fraction
    from gritkit.datasets.sources import load_source, ship

    path = tmp_path_factory.mktemp("sources")
    ship({name: sorted(load_source(name), key=lambda r: stable_fraction(json.dumps(r, sort_keys=True)))[:n]
          for name, n in SUBSET.items()}, path)
    return path


@pytest.fixture(scope="session")
def small_build(small_sources, tmp_path_factory):
    """(directory, manifest) of one ``gritkit data build`` of ``small_sources``. Do not modify it.

    Its evaluation items are held out by a stable hash of the source item, so they are also held
    out of the full build the shipped model was trained on."""
    from gritkit.datasets import build

    out = tmp_path_factory.mktemp("build") / "data"
    manifest = build(out, data_dir=small_sources, log=lambda *_: None)
    return out, manifest
