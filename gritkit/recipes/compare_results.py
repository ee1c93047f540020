"""Several models' results side by side, with the baselines of the first, as one markdown table.

    python -m gritkit.recipes.compare_results gritkit-smol=runs/smol.json base=runs/base.json

Each argument is ``LABEL=results.json`` (the output of ``gritkit eval``); all must come from the
same data build and sizes. Tasks a model was not run on stay empty.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BASELINE_COLUMNS = (("lexical", ("bm25", "tfidf", "lead", "uniform")), ("minilm", ("minilm",)), ("random", ("random",)))


def load_labelled(pairs: list[str]) -> dict[str, dict]:
    labelled = {}
    for pair in pairs:
        label, sep, path = pair.partition("=")
        if not sep or not label or not path:
            raise ValueError(f"expected LABEL=results.json, got {pair!r}")
        if not Path(path).is_file():
            raise FileNotFoundError(f"results file not found: {path}")
        labelled[label] = json.loads(Path(path).read_text())
    first = next(iter(labelled.values()))
    for label, results in labelled.items():
        if (results.get("data_manifest_sha256"), results.get("quick")) != (first.get("data_manifest_sha256"), first.get("quick")):
            raise ValueError(f"{label} was not evaluated on the same data build and sizes as the first results")
    return labelled


def comparison_table(labelled: dict[str, dict]) -> str:
    """Rows: tasks of the first results; columns: each label's model score, then the first's baselines."""
    first = next(iter(labelled.values()))
    header = ["task", "metric", *labelled, *(name for name, _ in BASELINE_COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task, entry in first["tasks"].items():
        metric = first["main_metric"][task]
        cells = [task, metric]
        for results in labelled.values():
            score = results["tasks"].get(task, {}).get("model", {}).get(metric)
            cells.append("" if score is None else f"{score:.3f}")
        for _, systems in BASELINE_COLUMNS:
            score = next((entry[s][metric] for s in systems if s in entry), None)
            cells.append("" if score is None else f"{score:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gritkit.recipes.compare_results", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="LABEL=results.json, the first one's baselines are shown")
    args = parser.parse_args(argv)
    try:
        print(comparison_table(load_labelled(args.results)), end="")
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
