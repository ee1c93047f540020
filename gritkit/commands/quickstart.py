"""gritkit quickstart: train, evaluate and show a GRIT model from scratch on this machine."""

from __future__ import annotations

NAME = "quickstart"
HELP = "train a GRIT model from scratch on the offline corpora, evaluate it and show both jobs (~15 min on 2 CPU cores)"


def add_arguments(parser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="changes to the recipe's training config (gritkit/recipes/quickstart.yaml), e.g. seed=1")
    parser.add_argument("--minutes", type=float, default=15.0, help="budget for the whole run, training gets what is left")
    parser.add_argument("--out", default="runs/quickstart", help="directory for the checkpoint, report and plots")
    parser.add_argument("--data", default="runs/data", help="data directory (built there if missing)")
    parser.add_argument("--recipe", default=None, help="another recipe config (default: gritkit/recipes/quickstart.yaml)")


def run(args) -> int:
    from ..recipes.quickstart import RECIPE, quickstart

    quickstart(args.out, minutes=args.minutes, data_dir=args.data, overrides=args.overrides,
               recipe=args.recipe or RECIPE)
    return 0
