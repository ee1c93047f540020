"""gritkit train: GRIT training from a YAML config with key=value overrides."""

from __future__ import annotations

NAME = "train"
HELP = "train a GRIT model (contrastive + language-modelling loss); runs under torchrun too"


def add_arguments(parser) -> None:
    parser.add_argument("config", help="YAML training config (see configs/tiny.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override config keys, e.g. max_steps=20 output_dir=runs/x")


def run(args) -> int:
    import json

    from ..training.config import load_config
    from ..training.loop import train

    summary = train(load_config(args.config, args.overrides))
    import os

    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(summary))
    return 0
