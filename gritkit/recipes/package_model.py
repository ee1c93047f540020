"""Copy a trained run into the package as a shipped model: float16 weights plus a model card.

    python -m gritkit.recipes.package_model runs/gritkit-tiny --results runs/gritkit-tiny/eval/results.json

Reads ``RUN/final`` (the trainer's output), ``RUN/config.json`` and ``RUN/metrics.jsonl``; writes
``gritkit/weights/<name>/`` (replaced whole, never half-written) and its ``README.md`` model card
with the data, tokens, parameters, command, evaluation table and limits.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..weights.shipped import SHIPPED_DIR

MAX_BYTES = 10 * 1024 * 1024  # the package must stay small: weights are shipped in the wheel


def package(run_dir: str | Path, results: str | Path, name: str = "gritkit-tiny", target_root: Path = SHIPPED_DIR,
            command: str = "gritkit train configs/gritkit-tiny.yaml", baselines_from: str | Path | None = None,
            trained_on: str = "one CPU thread") -> Path:
    """Write ``target_root/name`` from ``run_dir``; returns the directory.

    ``baselines_from``: another results.json on the same data build (e.g. ``gritkit eval --model
    minilm``) whose baseline systems are added to the card's table, so that a slow baseline need
    not be recomputed next to every model. ``trained_on`` names the hardware for the card.
    """
    import torch

    from ..model.gritlm import GritLM

    run_dir = Path(run_dir)
    for needed in (run_dir / "final" / "config.json", run_dir / "config.json", run_dir / "metrics.jsonl", Path(results)):
        if not needed.is_file():
            raise FileNotFoundError(f"cannot package {run_dir}: {needed} is missing")
    grit = GritLM.from_pretrained(run_dir / "final", dtype="float32", device="cpu")
    weights = sum(p.numel() * 2 for p in grit.model.parameters())
    if weights > MAX_BYTES:
        raise ValueError(f"{run_dir}: {weights / 2**20:.1f} MiB of float16 weights is over the {MAX_BYTES / 2**20:.0f} MiB limit")
    scores = json.loads(Path(results).read_text())
    if baselines_from is not None:
        scores = add_baselines(scores, json.loads(Path(baselines_from).read_text()), str(baselines_from))
    card = model_card(name, grit, json.loads((run_dir / "config.json").read_text()),
                      [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()],
                      scores, command, trained_on)
    grit.model.to(torch.float16)
    target = grit.save_pretrained(Path(target_root) / name)
    (target / "README.md").write_text(card)
    return target


def add_baselines(results: dict, other: dict, where: str) -> dict:
    """``results`` with the baseline systems of ``other`` (same data build) added where missing."""
    if results.get("data_manifest_sha256") != other.get("data_manifest_sha256") or other.get("quick") != results.get("quick"):
        raise ValueError(f"{where} was not evaluated on the same data build and sizes as the model")
    merged = json.loads(json.dumps(results))
    for task, entry in other["tasks"].items():
        if task in merged["tasks"]:
            for system, value in entry.items():
                if system != "model" and isinstance(value, dict) and system not in merged["tasks"][task]:
                    merged["tasks"][task][system] = value
    return merged


def model_card(name: str, grit, config: dict, metrics: list[dict], results: dict, command: str,
               trained_on: str = "one CPU thread") -> str:
    """The model card: what the model is, how it was made, what it scores, what it cannot do."""
    from ..evaluate.report import markdown_table
    from ..training.metrics import step_seconds

    params = sum(p.numel() for p in grit.model.parameters())
    tokens = sum(r.get("tokens", 0) for r in metrics)
    minutes = sum(step_seconds(r) for r in metrics) / 60
    model_config = grit.model.config
    datasets = ", ".join(f"`{Path(p).parent.name}/{Path(p).name}`" for p in config["embedding_data"] + config["generative_data"])
    return f"""# {name}

A small GRIT model (GritLM, arXiv 2402.09906, trained from scratch): the same weights embed text
(bidirectional attention, mean pooling, instruction-prefixed) and generate text (causal attention,
GRIT chat format). It ships inside `gritkit` so that every command works offline with no weights to
bring: `GritLM.from_pretrained("{name}")`, and the default `--model` of `gritkit embed`,
`generate`, `serve` and `rag index`.

## Model
- Architecture: {model_config.model_type}, {model_config.num_hidden_layers} layers, width {model_config.hidden_size}, \
{model_config.num_attention_heads} heads, {tie_note(model_config)}
- Parameters: {params:,} ({params * 2 / 2**20:.1f} MiB in float16, as shipped; loaded as float32 on a CPU)
- Tokenizer: byte-level BPE, {len(grit.tokenizer):,} tokens, trained on the training corpora, GRIT
  markers (`<|user|>`, `<|assistant|>`, `<|embed|>`) as single tokens
- Pooling: {grit.pooling}; attention for embeddings: {grit.attention}

## Training
- Command: `gritkit data build && {command}` (resume after an interruption
  with `resume=true`), then `python -m gritkit.recipes.package_model runs/{name} --results ...`
- Objective: unified GRIT (contrastive InfoNCE at temperature {config['temperature']} with one hard
  negative + next-token loss on the assistant turns), learning rate {config['learning_rate']}, AdamW,
  {config['warmup_ratio']:.0%} warm-up then linear decay, zero-initialised residual projections
- Per step: {config['embedding_batch_size']} queries and {config['embedding_batch_size'] * config['train_group_size']} \
documents (at most {config['query_max_length']}/{config['passage_max_length']} tokens), \
{config['generative_batch_size']} chats (at most {config['generative_max_length']} tokens)
- Steps: {len(metrics):,}; tokens seen: {tokens / 1e6:.1f}M; {minutes:.0f} minutes of steps on {trained_on}; \
seed {config['seed']}
- Data (offline, from Debian and Python packages; licences in `DATA_LICENSES.md`): Debian package
  descriptions, WordNet 3.0 glosses and examples, the Python and Perl FAQs, CPython stdlib
  docstrings and code. Evaluation items are held out by source item before any pair is made.
  Files of `gritkit data build`: {datasets}

## Evaluation (`gritkit eval --model {name}`, full held-out sets)
{markdown_table(results)}
{lexical_comparison(results)}

## Limits
A model of this size is a demonstration and a test fixture, not a production embedder or
assistant: it knows only the vocabulary and topics of its four corpora, its answers are often
wrong or generic, and its context was trained at {config['generative_max_length']} tokens (longer
inputs work mechanically but degrade). Use it to try the API, the server and RAG offline; convert
your own pretrained model for real work.
"""


def lexical_comparison(results: dict) -> str:
    """One sentence: the tasks where the model beats the lexical baseline (BM25, TF-IDF, lead words) and where not."""
    above, below = [], []
    for task, entry in results["tasks"].items():
        metric = results["main_metric"][task]
        lexical = next((entry[s][metric] for s in ("bm25", "tfidf", "lead") if s in entry), None)
        if lexical is None or "model" not in entry:
            continue
        (above if entry["model"][metric] > lexical else below).append(task)
    return (f"Above the lexical baseline on: {', '.join(above) or 'none'}. "
            f"Below it on: {', '.join(below) or 'none'}.")


def tie_note(model_config) -> str:
    return ("LM head tied to the token embeddings" if getattr(model_config, "tie_word_embeddings", False)
            else "separate input and output embeddings")


def packaging_arguments(parser, run_help: str, default_name: str, default_trained_on: str) -> None:
    """The arguments every packaging recipe takes: the run, its results, the name, the card's facts."""
    parser.add_argument("run", help=run_help)
    parser.add_argument("--results", required=True, help="results.json of `gritkit eval --model RUN/final`")
    parser.add_argument("--name", default=default_name, help=f"shipped model name (default: {default_name})")
    parser.add_argument("--baselines-from", default=None,
                        help="results.json of another eval on the same data (e.g. --model minilm) whose baselines join the table")
    parser.add_argument("--trained-on", default=default_trained_on, help="the training hardware, for the model card")


def report_packaging(write) -> int:
    """Run ``write()`` (a packaging call returning the directory); one error line and status 2 on bad input."""
    try:
        target = write()
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {target}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gritkit.recipes.package_model", description=__doc__.splitlines()[0])
    packaging_arguments(parser, "a trainer output directory (with final/, config.json, metrics.jsonl)",
                        "gritkit-tiny", "one CPU thread")
    args = parser.parse_args(argv)
    return report_packaging(lambda: package(args.run, args.results, name=args.name, baselines_from=args.baselines_from,
                                            trained_on=args.trained_on))


if __name__ == "__main__":
    sys.exit(main())
