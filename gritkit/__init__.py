"""gritkit: Generative Representational Instruction Tuning.

One decoder language model whose same weights embed text (bidirectional attention, mean pooling,
instruction-prefixed) and generate text (causal attention, chat format).
"""

__version__ = "0.1.0"
__all__ = ["GritLM", "GritConfig", "GritFormat", "BidirectionalAttentionError"]


def __getattr__(name):
    # Imported lazily so that `gritkit --help` and light tools need not import torch.
    if name in ("GritLM", "BidirectionalAttentionError"):
        from .model import gritlm as model

        return getattr(model, name)
    if name == "GritConfig":
        from .model.config import GritConfig

        return GritConfig
    if name == "GritFormat":
        from .model.formats import GritFormat

        return GritFormat
    raise AttributeError(f"module 'gritkit' has no attribute {name!r}")
