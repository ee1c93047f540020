"""gritkit: Generative Representational Instruction Tuning.

One decoder language model whose same weights embed text (bidirectional attention, mean pooling,
instruction-prefixed) and generate text (causal attention, chat format).

    from gritkit import GritLM, TrainConfig, load_config, train, RagIndex, RagPipeline
"""

from importlib import import_module

__version__ = "0.1.0"

# public name -> the module that defines it; imported on first use, so that `gritkit --help` and
# light tools need not import torch
_PUBLIC = {
    "GritLM": "gritkit.model.gritlm",
    "BidirectionalAttentionError": "gritkit.model.gritlm",
    "GritConfig": "gritkit.model.config",
    "GritFormat": "gritkit.model.formats",
    "TrainConfig": "gritkit.training.config",
    "load_config": "gritkit.training.config",
    "train": "gritkit.training.loop",
    "Callback": "gritkit.training.metrics",
    "RagIndex": "gritkit.rag.index",
    "RagPipeline": "gritkit.rag.pipeline",
}
__all__ = list(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'gritkit' has no attribute {name!r}")
