"""Packaging a LoRA run on a named base as a shipped adapter model, and rebuilding it by name."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest
import torch
from safetensors import safe_open

from gritkit import GritLM
from gritkit.weights import adapters, bases
from gritkit.training.config import TrainConfig
from gritkit.recipes import package_adapter as packaging
from tests.weights.test_bases import tiny_gguf, tiny_llama  # noqa: F401  (module fixtures)

pytest.importorskip("peft")


@pytest.fixture
def tiny_base(tiny_gguf, tmp_path, monkeypatch):  # noqa: F811
    """The tiny GGUF as a named base "tiny" with SmolLM2's prompt format, imported for training."""
    base_config = bases.BASES["smollm2-135m-instruct"].config
    monkeypatch.setitem(bases.BASES, "tiny", bases.BaseModel(
        package="unused", version="0", file="pkg/tiny.gguf", license="MIT", source="a test llama", config=base_config))
    monkeypatch.setattr(bases, "find_base_gguf", lambda name: tiny_gguf)
    monkeypatch.setenv("GRITKIT_CACHE", str(tmp_path / "cache"))
    return bases.import_base("tiny", tmp_path / "imported", log=lambda *_: None)


def _lora_run(base_dir, run, embed_format=None, compact=False, **config_keys):
    """A run directory as the trainer leaves it after a LoRA run on ``base_dir`` (final/ merged + adapter/)."""
    from peft import LoraConfig, get_peft_model

    grit = GritLM.from_pretrained(base_dir)
    if embed_format is not None:
        grit = grit.with_config(format=embed_format)
    if compact:  # as train.build_model does before LoRA freezes the embedding rows
        from gritkit.model.compact_format import add_marker_tokens

        grit = add_marker_tokens(grit)
        assert grit.config.special_markers  # the tiny tokenizer splits ChatML's markers
    torch.manual_seed(1)
    grit.model = get_peft_model(copy.deepcopy(grit.model), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    from gritkit.training.checkpoint import save_model
    from gritkit.parallel.distributed import Processes

    save_model(grit, run / "final", Processes())
    config = TrainConfig(model=str(base_dir), lora_r=4, compact_format=compact, embedding_data=["a.jsonl"], generative_data=["b.jsonl"], **config_keys)
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "tokens": 1000}) + "\n" for s in range(1, 4)))
    (run / "results.json").write_text(json.dumps({
        "tasks": {"faq-qa": {"kind": "retrieval", "model": {"ndcg@10": 0.7}, "bm25": {"ndcg@10": 0.6}}},
        "main_metric": {"faq-qa": "ndcg@10"}}))
    return run


@pytest.mark.parametrize("compact", [False, True], ids=["byte-exact-format", "compact-format"])
def test_packaged_adapter_rebuilds_the_trained_model_by_name(tiny_base, tiny_gguf, tmp_path, compact):  # noqa: F811
    run = _lora_run(tiny_base, tmp_path / "run", compact=compact)
    target = packaging.package(run, run / "results.json", name="smol-test", target_root=tmp_path / "shipped")
    with safe_open(str(target / "adapter" / "adapter_model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
        assert all("lora_" in k for k in f.keys())  # no embedding matrix, resized or not
    assert not (target / "model.safetensors").exists()  # the base is never shipped
    record = json.loads((target / adapters.BASE_RECORD).read_text())
    assert record == {"base": "tiny", "base_sha256": hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()}
    card = (target / "README.md").read_text()
    assert "LoRA rank 4, alpha 8, on q_proj, v_proj" in card and "Steps: 3;" in card
    assert "Above the lexical baseline on: faq-qa." in card

    rebuilt = GritLM.from_pretrained(adapters.build_adapter_model(target, log=lambda *_: None))
    trained = GritLM.from_pretrained(run / "final")
    assert rebuilt.config == trained.config.replace(format=bases.BASES["tiny"].config.format)
    for name, tensor in trained.model.state_dict().items():  # float16 adapter: deltas rounded, nothing else
        torch.testing.assert_close(rebuilt.model.state_dict()[name], tensor, rtol=0, atol=2e-3, msg=name)
    text = "list the files of a directory"
    assert float((rebuilt.encode(text) * trained.encode(text)).sum()) > 0.999


def test_package_refuses_a_run_with_another_format_or_too_large_without_writing(tiny_base, tmp_path, monkeypatch):
    from gritkit.model.formats import GritFormat

    run = _lora_run(tiny_base, tmp_path / "run", embed_format=GritFormat())
    with pytest.raises(ValueError, match="trained with embed_with_instruction="):
        packaging.package(run, run / "results.json", name="m", target_root=tmp_path / "shipped")
    monkeypatch.setattr(packaging, "MAX_BYTES", 100)
    with pytest.raises(ValueError, match="over the 0 MiB limit"):
        packaging.package(run, run / "results.json", name="m", target_root=tmp_path / "shipped")
    assert not (tmp_path / "shipped").exists()


def test_card_of_a_continued_doc_cache_run_says_what_the_run_added(tiny_base, tmp_path):
    plain = _lora_run(tiny_base, tmp_path / "plain")
    card = (packaging.package(plain, plain / "results.json", name="a", target_root=tmp_path / "shipped") / "README.md").read_text()
    assert "lora_init" not in card and "doc caches" not in card and "one step in" not in card

    run = _lora_run(tiny_base, tmp_path / "run", lora_init="runs/phase1/final/adapter", embedding_every=2,
                    doc_cache_data=["docs.jsonl"], doc_cache_batch_size=4, doc_cache_max_length=128, lambda_doc_cache=0.5)
    target = packaging.package(run, run / "results.json", name="b", target_root=tmp_path / "shipped",
                               command="gritkit train phase1.yaml && gritkit train phase2.yaml")
    card = (target / "README.md").read_text()
    assert "`lora_init: runs/phase1/final/adapter`" in card
    assert "fine-tuned here on 0.00M tokens (this run; more in the run it continues)" in card
    assert "Contrastive loss on one step in 2" in card
    assert "4 answers per step read from a document's embedding-pass keys/values (documents at most 128 tokens), " \
           "loss weight 0.5" in card
    assert "&& gritkit train phase1.yaml && gritkit train phase2.yaml`" in card
