"""gritkit eval: the embedding and generation suite on held-out real text, next to baselines."""

from __future__ import annotations

NAME = "eval"
HELP = "evaluate a model (embedding and generation) on held-out real text next to BM25/TF-IDF, random and MiniLM baselines"


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="a model directory, a shipped model (gritkit-tiny), or 'minilm'")
    parser.add_argument("--tasks", default=None, help="comma-separated task names (default: all; see --list-tasks)")
    parser.add_argument("--out", default="results.json", help="results JSON; the .md table and .png plots go beside it")
    parser.add_argument("--data", default=None, help="a `gritkit data build` directory (default: runs/data, built if missing)")
    parser.add_argument("--baselines", default="lexical,random,minilm",
                        help="comma-separated: lexical (BM25/TF-IDF/lead/uniform), random, minilm (skipped if not installed)")
    parser.add_argument("--pooling", default=None, help="override the model's saved pooling (mean, weighted_mean, last_token, cls)")
    parser.add_argument("--attention", default=None, choices=("bidirectional", "causal"),
                        help="override the model's saved embedding attention")
    parser.add_argument("--quick", action="store_true", help="hash-chosen subsets of every task (smoke runs, tests)")
    parser.add_argument("--list-tasks", action="store_true", help="print the task names and exit")


def run(args) -> int:
    from ..evaluate.suite import TASKS, check_tasks, evaluate

    if args.list_tasks:
        for name, (kind, _) in TASKS.items():
            print(f"{name}\t{kind}")
        return 0
    tasks = check_tasks([t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None)
    baselines = tuple(b.strip() for b in args.baselines.split(",") if b.strip())
    from ..evaluate.report import markdown_table, write_report

    overrides = {k: v for k, v in (("pooling", args.pooling), ("attention", args.attention)) if v is not None}
    results = evaluate(args.model, tasks=tasks, quick=args.quick, data_dir=args.data, baselines=baselines,
                       overrides=overrides)
    written = write_report(results, args.out)
    print(markdown_table(results), end="")
    print("wrote " + ", ".join(map(str, written)))
    return 0
