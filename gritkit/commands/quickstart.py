"""gritkit quickstart: train, evaluate and show a GRIT model from scratch on this machine."""

from __future__ import annotations

NAME = "quickstart"
HELP = "train a GRIT model from scratch on the offline corpora, evaluate it and show both jobs (~15 min on 2 CPU cores)"


def add_arguments(parser) -> None:
    parser.add_argument("--minutes", type=float, default=15.0, help="budget for the whole run, training gets what is left")
    parser.add_argument("--out", default="runs/quickstart", help="directory for the checkpoint, report and plots")
    parser.add_argument("--data", default="runs/data", help="data directory (built there if missing)")
    parser.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    from ..recipes.quickstart import QuickstartRecipe, quickstart

    recipe = QuickstartRecipe(seed=args.seed)
    quickstart(args.out, minutes=args.minutes, data_dir=args.data, recipe=recipe)
    return 0
