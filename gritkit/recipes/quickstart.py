"""gritkit quickstart: GRIT from scratch on real offline text, evaluated and shown, in ~15 minutes.

    gritkit quickstart [--minutes 15] [--out runs/quickstart]

1. builds (or reuses) the offline data and its tokenizer (``gritkit data build``);
2. trains one small Llama from scratch in unified mode (contrastive + next-token loss) for the
   time left after reserving time for evaluation and the demo;
3. evaluates it with the suite next to BM25/TF-IDF, random vectors and all-MiniLM-L6-v2 (when
   installed);
4. shows both jobs from the same weights: queries with their top documents, generations, and the
   RAG doc-cache speed-up on a long document;
5. writes ``report.md``, ``results.json``, the checkpoint and PNG plots under ``--out``.

The recipe (``QuickstartRecipe``) is what made from-scratch learning measurable in minutes here:
- zero-initialised residual projections: the untrained model is the final norm of its token
  embeddings, so mean pooling starts as a random-projection bag of words (nDCG@10 0.51 on the
  quick Debian search before any step, against 0.06 for the same model initialised as usual) and
  the contrastive loss leaves chance at once instead of sitting on the plateau where a random
  deep model stays (DESIGN.md: at chance for hundreds of steps);
- an untied LM head and 32 chats per step: in a model this narrow one matrix serving as both the
  embedding table the contrastive loss shapes and the output layer holds the LM back (tied with
  16 chats per step: held-out perplexity 1727; untied with 32: 671, retrieval within 0.05);
- short sequences (queries 32, passages 64, chats 96 tokens) and a small width, for ~1,700
  optimiser steps in 13 minutes with two threads;
- temperature 0.05: at 0.02 the untrained model's similarity spread makes the loss start far
  above chance, and the fastest way down is to flatten all similarities (collapse);
- learning rate 1e-3: 1.5e-3 (with more generative and fewer embedding samples per step) gave
  perplexity 437 but halved every retrieval score;
- the untied LM head at 6x that learning rate (``lm_head_lr_scale``) and 48 queries per step:
  only the next-token loss trains the head, and in a unified run it gets a third of the optimiser
  steps a generative-only run would (``gritkit ablate``), so the LM side is starved of steps.
  Same 12 minutes on one thread (quick suite; perplexity / retrieval nDCG@10 average / FAQ):
  head 1x, 64 queries 852 +- 41 (two seeds) / 0.481; head 4x 484 / 0.499 / 0.334; head 8x
  425 / 0.469 (summaries ROUGE-L 0.000); 48 queries 416 / 0.463 / 0.319; 48 queries and head
  6x 385 / 0.473 / 0.271. More LM steps by other means cost retrieval more: 32 queries 381 /
  0.396 / 0.147; the contrastive batch on every second step only (``embedding_every: 2``) 295 /
  0.310 / 0.145; LM loss weight 1.5 (48 queries, head 4x) 349 / 0.422 / 0.262 (ROUGE-L 0.000);
  24 and 16 chats per step (48 queries, head 6x) 431 and 447; 96 chats per step 706 / 0.429.
  On the quickstart's two threads 48 queries with head 6x gave perplexity 314 and FAQ 0.311
  (10.6x random); with the LM loss weight (``lambda_gen``) at 1.25, 300 and 0.459, and the
  training curve's mean next-token loss over the last tenth fell 5.197 -> 5.085 with the
  contrastive loss unchanged (1.564 / 1.566). At one thread weight 1.5 lowered it 5.504 -> 5.357
  (contrastive 2.154 -> 1.754), so the quickstart uses 1.5;
- the LM head applied only at answer positions (~16% of a padded chat batch), which halves the
  generative backward. (Two trainer processes of one thread each were measured against one
  process with two threads, ``benchmarks/processes.py``: 0.95x, so the quickstart keeps one.)
Collapse is detected on the training curve (``collapse_check``): the contrastive loss over the
last fifth of the run must stay clearly below chance, ln(documents per batch).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class QuickstartRecipe:
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    tie_embeddings: bool = False
    temperature: float = 0.05
    learning_rate: float = 1e-3
    lm_head_lr_scale: float = 6.0
    lambda_gen: float = 1.5
    embedding_batch_size: int = 48
    generative_batch_size: int = 32
    query_max_length: int = 32
    passage_max_length: int = 64
    generative_max_length: int = 96
    seed: int = 0


# Seconds kept aside from the budget for evaluation and the demo (measured on this machine kind).
EVAL_RESERVE_S = 100
DEMO_RESERVE_S = 30


def quickstart(out: str | Path = "runs/quickstart", minutes: float = 15.0, data_dir: str | Path = "runs/data",
               recipe: QuickstartRecipe | None = None, log=print) -> dict:
    """Run the whole quickstart; returns a summary dict (also written to ``out/summary.json``)."""
    from transformers import AutoTokenizer

    from ..datasets.build import MANIFEST, build
    from ..tiny import build_tiny_model
    from ..train import train

    began = time.perf_counter()
    _check_evaluation_dependencies()
    recipe = recipe or QuickstartRecipe()
    out, data_dir = Path(out), Path(data_dir)
    if (out / "train" / "metrics.jsonl").exists():
        raise ValueError(f"{out} already holds a quickstart run; remove it or pass another --out")
    log(f"[1/5] data: {data_dir}")
    if not (data_dir / MANIFEST).is_file():
        build(data_dir, log=lambda *a: log("   ", *a))
    tokenizer = AutoTokenizer.from_pretrained(data_dir / "tokenizer")
    grit = build_tiny_model("llama", tokenizer, seed=recipe.seed, zero_residual=True, hidden_size=recipe.hidden_size,
                            num_layers=recipe.num_layers, num_heads=recipe.num_heads, num_kv_heads=recipe.num_heads,
                            max_positions=4096, tie_word_embeddings=recipe.tie_embeddings)
    params = sum(p.numel() for p in grit.model.parameters())
    grit.save_pretrained(out / "init")

    train_minutes = minutes - (time.perf_counter() - began + EVAL_RESERVE_S + DEMO_RESERVE_S) / 60
    if train_minutes < 1:
        raise ValueError(f"--minutes {minutes} leaves no time to train (evaluation and demo need ~4 minutes)")
    log(f"[2/5] training a {params / 1e6:.2f}M-parameter Llama from scratch for {train_minutes:.1f} minutes "
        "(unified: contrastive + next-token loss)")
    config = recipe_train_config(recipe, data_dir, out / "train", train_minutes, model=str(out / "init"))
    train_began = time.perf_counter()
    summary = train(config)
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
    from ..model import GritLM
    from .quickstart_report import demo, write_markdown

    shown = demo(GritLM.from_pretrained(model_dir, device="cpu"), data_dir, log=log)

    log("[5/5] report")
    collapse = collapse_check(records, recipe.embedding_batch_size * 2)
    plot = plot_losses(records, out / "losses.png", chance_rep=math.log(recipe.embedding_batch_size * 2),
                       chance_gen=math.log(len(tokenizer)))
    result = {"recipe": asdict(recipe), "parameters": params, "steps": summary["steps"], "tokens_seen": tokens,
              "train_minutes": round(trained_minutes, 2), "collapse": collapse, "model": str(model_dir),
              "total_minutes": round((time.perf_counter() - began) / 60, 2), "demo": shown}
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(out / "report.md", result, results, [plot, *written])
    log(f"done in {result['total_minutes']} minutes: {out / 'report.md'}, {out / 'results.json'}, "
        f"plots {', '.join(str(p) for p in [plot, *written] if str(p).endswith('.png'))}, model {model_dir}")
    return result


def recipe_train_config(recipe: QuickstartRecipe, data_dir: str | Path, output_dir: str | Path, minutes: float,
                        model: str = "", **overrides):
    """The trainer's config for ``recipe`` on a `gritkit data build` directory, with a time budget.

    ``model`` "" builds the recipe's Llama from scratch inside the trainer (the data's tokenizer,
    zero-initialised residual projections); ``overrides`` are further TrainConfig keys.
    """
    from ..config import TrainConfig

    data_dir = Path(data_dir)
    settings = dict(
        model=model, tokenizer="" if model else str(data_dir / "tokenizer"), architecture="llama",
        hidden_size=recipe.hidden_size, num_layers=recipe.num_layers, num_heads=recipe.num_heads,
        zero_init_residual=True, tie_embeddings=recipe.tie_embeddings, mode="unified",
        embedding_data=sorted(str(p) for p in (data_dir / "contrastive").glob("*.jsonl")),
        generative_data=sorted(str(p) for p in (data_dir / "generative").glob("*.jsonl")),
        temperature=recipe.temperature, train_group_size=2, learning_rate=recipe.learning_rate,
        lm_head_lr_scale=recipe.lm_head_lr_scale, lambda_gen=recipe.lambda_gen,
        embedding_batch_size=recipe.embedding_batch_size, generative_batch_size=recipe.generative_batch_size,
        generative_micro_batch_size=recipe.generative_batch_size, query_max_length=recipe.query_max_length,
        passage_max_length=recipe.passage_max_length, generative_max_length=recipe.generative_max_length,
        max_minutes=minutes, warmup_ratio=0.03, output_dir=str(output_dir), seed=recipe.seed, tensorboard=False)
    settings.update(overrides)
    return TrainConfig(**settings).check()


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

    from ..train import step_seconds

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
