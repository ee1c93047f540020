"""Packaging a trained run as a shipped model, and loading shipped models by name."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open

from gritkit import GritLM
from gritkit.training.config import TrainConfig
from gritkit.recipes import package_model as packaging
from gritkit.weights.shipped import resolve_model_dir


@pytest.fixture
def run_dir(tiny_llama_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_llama_dir, run / "final")
    config = TrainConfig(embedding_data=["runs/data/contrastive/a.jsonl"], generative_data=["runs/data/generative/b.jsonl"])
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "tokens": 250_000}) + "\n" for s in range(1, 5)))
    (run / "results.json").write_text(json.dumps({
        "tasks": {"debian-search": {"kind": "retrieval", "model": {"ndcg@10": 0.5}, "bm25": {"ndcg@10": 0.8}}},
        "main_metric": {"debian-search": "ndcg@10"}}))
    return run


def test_package_writes_float16_weights_that_load_as_the_rounded_model(run_dir, tmp_path, tiny_llama):
    target = packaging.package(run_dir, run_dir / "results.json", name="m", target_root=tmp_path / "shipped")
    with safe_open(str(target / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    loaded = GritLM.from_pretrained(target, device="cpu")
    original = dict(tiny_llama.model.named_parameters())
    for key, value in loaded.model.named_parameters():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, original[key].detach().half().float(), rtol=0, atol=0)
    texts = ["compress files with gzip", "a dictionary of English words"]
    cos = (loaded.encode(texts) * tiny_llama.encode(texts)).sum(-1)
    assert np.all(cos > 0.999)
    card = (target / "README.md").read_text()
    params = sum(p.numel() for p in tiny_llama.model.parameters())
    assert f"Parameters: {params:,}" in card and "tokens seen: 1.0M" in card and "Steps: 4;" in card
    assert "| debian-search | ndcg@10 | 0.5000 | 0.8000 |" in card and "`contrastive/a.jsonl`" in card
    assert "Above the lexical baseline on: none. Below it on: debian-search." in card


def test_package_refuses_oversized_models_and_missing_inputs_without_writing(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(packaging, "MAX_BYTES", 1000)
    with pytest.raises(ValueError, match="over the 0 MiB limit"):
        packaging.package(run_dir, run_dir / "results.json", name="m", target_root=tmp_path / "shipped")
    with pytest.raises(FileNotFoundError, match="nothing.json is missing"):
        packaging.package(run_dir, tmp_path / "nothing.json", name="m", target_root=tmp_path / "shipped")
    assert not (tmp_path / "shipped").exists()


def test_model_names_resolve_to_local_directories_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gritkit-tiny").mkdir()
    assert resolve_model_dir("gritkit-tiny").resolve() == (tmp_path / "gritkit-tiny").resolve()
    with pytest.raises(FileNotFoundError, match="model directory not found: nowhere .shipped models: gritkit-tiny"):
        resolve_model_dir("nowhere")
