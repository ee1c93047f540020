"""gritkit quickstart: GRIT from scratch on real offline text, evaluated and shown, in ~15 minutes.

    gritkit quickstart [--minutes 15] [--out runs/quickstart] [--data runs/data] [key=value ...]

1. builds (or reuses) the offline data and its tokenizer (``gritkit data build``);
2. trains one small Llama from scratch in unified mode (contrastive + next-token loss) for the
   time left after reserving time for evaluation and the demo;
3. evaluates it with the suite next to BM25/TF-IDF, random vectors and all-MiniLM-L6-v2 (when
   installed);
4. shows both jobs from the same weights: queries with their top documents, generations, and the
   RAG doc-cache speed-up on a long document;
5. writes ``report.md``, ``results.json``, ``summary.json``, the checkpoint and PNG plots under
   ``--out``.

The recipe is ``quickstart.yaml`` beside this file, a commented training config; ``key=value``
overrides change any of its keys. docs/reports/quickstart.md holds what it measured and the history of
the choices in it. Collapse is detected on the training curve (``collapse_check``): the
contrastive loss over the last fifth of the run must stay clearly below chance, ln(documents per
batch).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from pathlib import Path

RECIPE = Path(__file__).with_name("quickstart.yaml")
# Data paths in the recipe start with this; ``data_dir`` replaces it.
DATA_PREFIX = "runs/data"
# Seconds kept aside from the budget for evaluation and the demo (measured on this machine kind).
EVAL_RESERVE_S = 100
DEMO_RESERVE_S = 30
# gritkit-smol's searches and summaries; its first use also imports its base and merges (~60 s).
PRETRAINED_DEMO_RESERVE_S = 90


def recipe_config(data_dir: str | Path = DATA_PREFIX, output_dir: str | Path = "runs/quickstart/train",
                  minutes: float = 0.0, overrides: list[str] = (), recipe: str | Path = RECIPE, **settings):
    """The trainer's config of the recipe: ``recipe`` (YAML) with its ``runs/data`` paths moved to
    ``data_dir``, ``output_dir`` and ``max_minutes`` set, then ``settings`` (TrainConfig keys), then
    ``overrides`` (``key=value`` strings, as typed on the command line)."""
    from ..training.config import config_from_dict, parse_overrides, read_config_file

    values = read_config_file(recipe)

    def moved(path: str) -> str:
        return str(Path(data_dir) / Path(path).relative_to(DATA_PREFIX)) if path.startswith(DATA_PREFIX + "/") else path

    for key in ("embedding_data", "generative_data"):
        values[key] = [moved(p) for p in values.get(key, [])]
    values["tokenizer"] = moved(values.get("tokenizer", ""))
    config = config_from_dict({**values, "output_dir": str(output_dir), "max_minutes": minutes, **settings},
                              str(recipe))
    return config_from_dict({**config.to_dict(), **parse_overrides(list(overrides))}, "override")


def quickstart(out: str | Path = "runs/quickstart", minutes: float = 15.0, data_dir: str | Path = DATA_PREFIX,
               overrides: list[str] = (), recipe: str | Path = RECIPE, log=print) -> dict:
    """Run the whole quickstart; returns a summary dict (also written to ``out/summary.json``)."""
    from transformers import AutoTokenizer

    from ..datasets.build import MANIFEST, build
    from ..model.config import GritConfig
    from ..model.tiny import build_tiny_model
    from ..training.model_setup import grit_settings
    from ..training.loop import train

    began = time.perf_counter()
    _check_evaluation_dependencies()
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
    result = {"recipe": config.to_dict(), "parameters": params, "steps": summary["steps"], "tokens_seen": tokens,
              "train_minutes": round(trained_minutes, 2), "threads": summary["threads"],
              "truncation": summary["truncation"], "collapse": collapse, "model": str(model_dir),
              "total_minutes": round((time.perf_counter() - began) / 60, 2), "demo": shown,
              "pretrained_demo": pretrained}
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(out / "report.md", result, results, [plot, *written])
    log(f"done in {result['total_minutes']} minutes: {out / 'report.md'}, {out / 'results.json'}, "
        f"plots {', '.join(str(p) for p in [plot, *written] if str(p).endswith('.png'))}, model {model_dir}")
    return result


def _check_evaluation_dependencies() -> None:
    """Fail before training, not after it, when the evaluation extras are missing."""
    import importlib.util

    modules = ("sklearn", "bm25s", "pytrec_eval", "rouge_score", "matplotlib")
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"gritkit quickstart evaluates what it trains and needs the eval extras "
                         f"(missing: {', '.join(missing)}): pip install 'gritkit[eval]' (or -e '.[eval]')")


def collapse_check(records: list[dict], documents_per_batch: int) -> dict:
    """Whether the contrastive loss of the last fifth of the run stayed clearly below chance."""
    losses = [r["loss_rep"] for r in records if r.get("loss_rep") is not None]
    chance = math.log(documents_per_batch)
    tail = losses[-max(1, len(losses) // 5):] if losses else [chance]
    final = statistics.median(tail)
    return {"chance": round(chance, 3), "final_loss_rep": round(final, 3), "collapsed": final > 0.9 * chance}


def plot_losses(records: list[dict], path: Path, chance_rep: float, chance_gen: float) -> Path:
    """Both training losses against training minutes (raw and a running mean), with chance levels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ..training.metrics import step_seconds

    minutes = np.cumsum([step_seconds(r) / 60 for r in records])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, chance, title in ((axes[0], "loss_rep", chance_rep, "contrastive (InfoNCE)"),
                                   (axes[1], "loss_gen", chance_gen, "language modelling")):
        kept = [i for i, r in enumerate(records) if r.get(key) is not None]  # embedding_every skips steps
        values = np.array([records[i][key] for i in kept], dtype=float)
        at = minutes[kept]
        window = max(1, len(values) // 25)
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(at, values, lw=0.5, alpha=0.4, color="C0")
        ax.plot(at[window - 1:], smooth, lw=1.5, color="C0", label=f"mean of {window} steps")
        ax.axhline(chance, color="grey", ls="--", lw=0.8, label="chance")
        ax.set_title(title)
        ax.set_xlabel("training minutes")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
