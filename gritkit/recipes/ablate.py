"""The paper's core claim in miniature: does one unified model match two specialised ones?

    gritkit ablate [--minutes 10] [--seeds 0,1] [--jobs 1] [--out runs/ablate]

Trains, from scratch and with equal compute (the same wall-clock budget on the same machine, the
quickstart's recipe and model), one model per variant and seed:

- ``unified``: contrastive + next-token loss, bidirectional attention and mean pooling (GRIT);
- ``embedding``: the contrastive loss only;
- ``generative``: the next-token loss only;
- ``causal-last-token``: unified, but embeddings from causal attention and the last token.

Each model is evaluated with the suite (``--quick`` sizes) and the table reports, per variant,
the mean and spread over seeds of the embedding average (mean main score of the retrieval,
classification and clustering tasks) and of the generative scores (held-out perplexity, ROUGE-L).
Runs go in subprocesses (``--jobs`` at a time, ``--threads`` each) so that parallel runs do not
share one interpreter; a finished run (its ``results.json`` exists) is not repeated, so an
interrupted ablation continues where it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

VARIANTS = {
    "unified": {},
    # single-objective runs take every step for their one loss (embedding_every is a unified-mode knob)
    "embedding": {"mode": "embedding", "embedding_every": 1},
    "generative": {"mode": "generative", "embedding_every": 1},
    "causal-last-token": {"attention": "causal", "pooling": "last_token"},
}
EMBEDDING_KINDS = ("retrieval", "classification", "clustering")


def ablate(out: str | Path = "runs/ablate", minutes: float = 10.0, seeds=(0, 1), variants=tuple(VARIANTS),
           jobs: int = 1, threads: int = 1, data_dir: str | Path = "runs/data", log=print) -> dict:
    """Train and evaluate every (variant, seed); write ``ablation.json`` and ``ablation.md``; return the summary."""
    from ..datasets.build import MANIFEST, build
    from .quickstart_steps import recipe_config

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if minutes <= 0 or jobs < 1 or threads < 1 or not seeds:
        raise ValueError("ablate needs minutes > 0, jobs >= 1, threads >= 1 and at least one seed")
    out, data_dir = Path(out), Path(data_dir)
    if not (data_dir / MANIFEST).is_file():
        build(data_dir, log=lambda *a: log("   ", *a))
    runs = []
    for seed in seeds:  # seed-major, so a change in machine load falls on every variant alike
        for variant in variants:
            run_dir = out / f"{variant}-seed{seed}"
            config = recipe_config(data_dir, run_dir / "train", minutes, seed=seed, progress_bar=False,
                                   **VARIANTS[variant])
            runs.append((variant, seed, run_dir, config))
    todo = [r for r in runs if not (r[2] / "results.json").is_file()]
    per_run = minutes + 2  # training plus the quick evaluation
    log(f"ablation: {len(runs)} runs ({len(runs) - len(todo)} already done), {minutes:g} min of training each, "
        f"{jobs} at a time -> about {-(-len(todo) // jobs) * per_run:.0f} minutes; logs in {out}/*/log.txt")

    def one(run) -> None:
        variant, seed, run_dir, config = run
        shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished run restarts: its time budget cannot resume
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        began = time.perf_counter()
        with open(run_dir / "log.txt", "w") as logfile:
            for argv in (["train", str(run_dir / "config.yaml")],
                         ["eval", "--model", str(run_dir / "train" / "final"), "--quick", "--baselines", "",
                          "--data", str(data_dir), "--out", str(run_dir / ".results.json")]):
                done = subprocess.run([sys.executable, "-m", "gritkit.cli", *argv], stdout=logfile,
                                      stderr=subprocess.STDOUT, env=env)
                if done.returncode:
                    raise RuntimeError(f"{variant} seed {seed}: `gritkit {argv[0]}` failed "
                                       f"(exit {done.returncode}); see {run_dir / 'log.txt'}")
        (run_dir / ".results.json").rename(run_dir / "results.json")  # marks the run finished
        log(f"   {variant} seed {seed}: done in {(time.perf_counter() - began) / 60:.1f} min")

    with ThreadPoolExecutor(jobs) as pool:
        for future in [pool.submit(one, r) for r in todo]:
            future.result()
    summary = summarize(sorted(((variant, seed, run_dir) for variant, seed, run_dir, _ in runs),
                               key=lambda r: list(variants).index(r[0])), minutes)
    (out / "ablation.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "ablation.md").write_text(ablation_table(summary))
    log(ablation_table(summary).rstrip())
    log(f"wrote {out / 'ablation.md'} and {out / 'ablation.json'}")
    return summary


def run_scores(results: dict, metrics: list[dict]) -> dict:
    """One run's scores from its results.json and its training metrics."""
    tasks = results["tasks"]
    main = results["main_metric"]
    embedding = {name: task["model"][main[name]] for name, task in tasks.items() if task["kind"] in EMBEDDING_KINDS}
    retrieval = [task["model"]["ndcg@10"] for task in tasks.values() if task["kind"] == "retrieval"]
    return {"embedding_average": statistics.fmean(embedding.values()),
            "retrieval_ndcg10": statistics.fmean(retrieval),
            "perplexity": tasks["heldout-perplexity"]["model"]["perplexity"],
            "rougeL": tasks["debian-summary"]["model"]["rougeL"],
            "steps": len(metrics), "tokens": sum(r.get("tokens", 0) for r in metrics),
            "late_change_rep": late_loss_change(metrics, "loss_rep"),
            "late_change_gen": late_loss_change(metrics, "loss_gen"),
            "embedding_tasks": embedding}


def late_loss_change(metrics: list[dict], key: str) -> float | None:
    """Relative change of the mean training loss from the second-to-last tenth of the run to the last.

    Near 0 means the run had flattened out by the end of its budget. Read it with care: the
    learning rate decays to 0 over those same steps, and a run that starts a second pass over its
    data there sees a drop from memorisation, not from learning.
    None when the run did not train that loss or is too short to split into tenths.
    """
    values = [r[key] for r in metrics if r.get(key) is not None]
    tenth = len(values) // 10
    if tenth == 0:
        return None
    return statistics.fmean(values[-tenth:]) / statistics.fmean(values[-2 * tenth: -tenth]) - 1


def summarize(runs: list[tuple[str, int, Path]], minutes: float) -> dict:
    """Per-run scores and, per variant, mean and standard deviation over seeds."""
    per_run, variants = [], {}
    for variant, seed, run_dir in runs:
        results = json.loads((run_dir / "results.json").read_text())
        metrics = [json.loads(line) for line in (run_dir / "train" / "metrics.jsonl").read_text().splitlines()]
        scores = {"variant": variant, "seed": seed, **run_scores(results, metrics)}
        per_run.append(scores)
        variants.setdefault(variant, []).append(scores)
    table = {}
    for variant, rows in variants.items():
        table[variant] = {}
        for key in ("embedding_average", "retrieval_ndcg10", "perplexity", "rougeL", "steps", "tokens"):
            values = [r[key] for r in rows]
            table[variant][key] = {"mean": statistics.fmean(values),
                                   "sd": statistics.stdev(values) if len(values) > 1 else 0.0}
        for key in ("late_change_rep", "late_change_gen"):
            values = [r[key] for r in rows if r[key] is not None]
            table[variant][key] = statistics.fmean(values) if values else None
        table[variant]["seeds"] = len(rows)
    return {"minutes_per_run": minutes, "variants": table, "runs": per_run}


def ablation_table(summary: dict) -> str:
    """The markdown table: one row per variant, mean ± standard deviation over seeds."""
    def cell(stat: dict, digits: int) -> str:
        return f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f}"

    def change(value: float | None) -> str:
        return "—" if value is None else f"{100 * value:+.1f}%"

    lines = [f"Training budget {summary['minutes_per_run']:g} min per run (same recipe and model); "
             "mean ± sd over seeds; embedding average = mean main score of the 8 embedding tasks (quick sizes); "
             "last-tenth change = mean training loss over the run's last tenth against the tenth before "
             "(contrastive / next-token; near 0: flattened out).",
             "",
             "| variant | seeds | embedding average | retrieval nDCG@10 | held-out perplexity | summary ROUGE-L | steps | tokens "
             "| last-tenth loss change |",
             "|---|---|---|---|---|---|---|---|---|"]
    for variant, row in summary["variants"].items():
        lines.append(f"| {variant} | {row['seeds']} | {cell(row['embedding_average'], 3)} | "
                     f"{cell(row['retrieval_ndcg10'], 3)} | {cell(row['perplexity'], 0)} | {cell(row['rougeL'], 3)} | "
                     f"{row['steps']['mean']:.0f} | {row['tokens']['mean'] / 1e6:.2f}M | "
                     f"{change(row['late_change_rep'])} / {change(row['late_change_gen'])} |")
    return "\n".join(lines) + "\n"
