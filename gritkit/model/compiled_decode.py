"""Compiled decode steps: a preallocated KV cache and one ``torch.compile``d forward per step.

An eager decode step of a small model spends as long in Python and operator dispatch as in its
arithmetic (SmolLM2-135M on 2 cores: ~12 ms of a 36 ms fp32 step). transformers' ``generate``
compiles the one-token forward when the cache is a ``StaticCache`` (fixed shapes) and the compile
config allows the device; the cache is passed in by us, so its size is chosen here: the smallest of
``CACHE_SIZES`` that holds the prompt and the answer (eager decoding past the largest). Each size
and batch size is compiled once per process, on first use: tens of seconds on 2 CPU cores, logged
when it starts and when it is done, then reused.

The prefill runs eagerly (transformers compiles only the one-token step), and the compiled step
computes what the eager one does: greedy answers at fp32 are the same tokens (tested).
"""

from __future__ import annotations

import logging
import time

import torch

logger = logging.getLogger(__name__)

# Each step attends over the whole cache, so a cache far longer than the text costs time (SmolLM2,
# int8: 62 tok/s with 128 positions, 49 with 512); powers of two keep the compiles few (one each).
CACHE_SIZES = (128, 256, 512, 1024, 2048, 4096, 8192)


def cache_size(tokens: int) -> int | None:
    """The smallest of ``CACHE_SIZES`` holding ``tokens``; None past the largest."""
    return next((size for size in CACHE_SIZES if tokens <= size), None)


class CompiledDecode:
    """The static caches and compile settings of one model's compiled ``generate`` calls."""

    def __init__(self, model: torch.nn.Module):
        from transformers import CompileConfig

        self.model = model
        self.config = CompileConfig(fullgraph=True, dynamic=False)
        self.config._compile_all_devices = True  # transformers compiles only on accelerators unless told
        self.cache = None
        self.compiled: set[tuple[int, int]] = set()

    def generate(self, generate, batch: int, tokens: int, **kwargs):
        """``generate(**kwargs)`` (transformers' ``generate``) for ``batch`` sequences of up to
        ``tokens`` tokens, with a reset static cache of the right size and the compile config."""
        from transformers import StaticCache

        shape = (batch, cache_size(tokens))
        if shape[1] is None:
            logger.warning("%d tokens exceed the largest compiled cache (%d): decoding eagerly", tokens, CACHE_SIZES[-1])
            return generate(**kwargs)
        if self.cache is None or self.shape != shape:
            self.cache = StaticCache(config=self.model.config, max_cache_len=shape[1])
            self.shape = shape
        else:
            with torch.inference_mode():
                self.cache.reset()
        first = shape not in self.compiled
        if first:
            logger.warning("compiling the decode step for %d sequence(s) of up to %d tokens (once per size and "
                           "process; tens of seconds on a CPU)", *shape)
        started = time.perf_counter()
        output = generate(cache=self.cache, compile_config=self.config, **kwargs)
        if first:
            self.compiled.add(shape)
            logger.warning("compiled decode step ready: the first call took %.1f s", time.perf_counter() - started)
        return output
