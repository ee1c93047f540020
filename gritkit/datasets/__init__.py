"""Real offline corpora: shipped compact copies, their extractors, and the training/evaluation builder.

    from gritkit.datasets import build
    report = build("runs/data")       # contrastive/, generative/, eval/, tokenizer/, MANIFEST.json
"""

from .build import DEFAULT_OUT, build

__all__ = ["build", "DEFAULT_OUT"]
