"""gritkit ablate: unified vs embedding-only vs generative-only vs causal + last token, equal compute."""

from __future__ import annotations

NAME = "ablate"
HELP = ("train unified, embedding-only, generative-only and causal+last-token models from scratch with equal "
        "compute, several seeds, and tabulate embedding and generative scores")


def add_arguments(parser) -> None:
    from ..recipes.ablate import VARIANTS

    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of every run (default 10)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds (default 0,1)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}")
    parser.add_argument("--jobs", type=int, default=1, help="runs at the same time (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run (default 1)")
    parser.add_argument("--out", default="runs/ablate", help="one directory per run, ablation.md and ablation.json")
    parser.add_argument("--data", default="runs/data", help="data directory (built there if missing)")


def run(args) -> int:
    from ..recipes.ablate import ablate

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    ablate(args.out, minutes=args.minutes, seeds=seeds, variants=[v.strip() for v in args.variants.split(",") if v.strip()],
           jobs=args.jobs, threads=args.threads, data_dir=args.data)
    return 0
