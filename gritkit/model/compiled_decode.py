"""Compiled decode steps: a preallocated KV cache and one ``torch.compile``d forward per step.

An eager decode step of a small model spends as long in Python and operator dispatch as in its
arithmetic (SmolLM2-135M on 2 cores: ~12 ms of a 36 ms fp32 step). So the one-token forward is
compiled over a ``StaticCache`` (fixed shapes), whose size is chosen here: the smallest of
``CACHE_SIZES`` that holds the prompt and the answer (eager decoding past the largest). Each size
and batch size is compiled once per process, on first use, logged when it starts and when it is
done, then reused. The prefill runs eagerly. A cache given with the prompt (a RAG doc cache) is
copied into the static cache first, and the prefill runs over the tokens after it.

One sequence decoded greedily (``generate``'s default, and every RAG answer) runs in gritkit's own
loop around the compiled step, which returns the chosen token: transformers' ``generate`` spends
~2 ms per token on bookkeeping (logits processors, stopping criteria, growing masks and ids) that
plain greedy decoding does not need. Everything else (batches, sampling, ``min_new_tokens``, a
model whose generation config changes the chosen tokens) goes to ``generate`` with the static cache
and its compile config. Both give the eager decoder's tokens (tested).

Two ways to compile (``COMPILE_MODES``):

- ``"exact"`` (``compile=True``): inductor's default; the matrix products stay PyTorch's own
  kernels, so greedy answers at fp32 are the eager decoder's tokens (tested). Tens of seconds.
- ``"max-autotune"``: the weights are frozen into the compiled step as constants (inductor's
  ``freezing``) and each matrix product is the faster of PyTorch's kernel and inductor's C++
  micro-GEMM, timed on this machine. The micro-GEMM reads int8 weights at ~2.5x the speed of
  ``torch._weight_int8pack_mm`` (benchmarks/README.md). Its sums run in another order, so fp32
  answers are not bitwise the eager ones (benchmarks/fast_paths.py counts the greedy matches).
  Minutes on a CPU the first time; inductor keeps its timings on disk for later processes.
  Weights changed after the first call are not seen by the compiled step (they are constants).
  One cache shape per model: the first call's batch and cache size; calls that need another
  decode eagerly (logged), since a frozen step was seen to run on with a new cache's shape.
"""

from __future__ import annotations

import functools
import logging
import time

import torch

from .grouped_attention import use_grouped_attention
from .threaded_gemv import unthread_gemvs

logger = logging.getLogger(__name__)

COMPILE_MODES = ("exact", "max-autotune")
# Each step attends over the whole cache, so a cache far longer than the text costs time (SmolLM2,
# int8: 62 tok/s with 128 positions, 49 with 512); powers of two keep the compiles few (one each).
CACHE_SIZES = (128, 256, 512, 1024, 2048, 4096, 8192)
# The arguments of a call that gritkit's own greedy loop decodes (one sequence); any other
# (sampling, min_new_tokens, a streamer...) goes to transformers' generate.
PLAIN_GREEDY = {"input_ids", "attention_mask", "max_new_tokens", "min_new_tokens", "pad_token_id", "eos_token_id",
                "do_sample"}
# GenerationConfig fields that change which token greedy decoding picks (transformers applies them
# as logits processors); a model whose own generation config sets one decodes through generate.
TOKEN_CHANGING_SETTINGS = ("repetition_penalty", "encoder_repetition_penalty", "no_repeat_ngram_size",
                           "bad_words_ids", "sequence_bias", "suppress_tokens", "begin_suppress_tokens",
                           "forced_bos_token_id", "forced_eos_token_id", "min_length", "min_new_tokens",
                           "exponential_decay_length_penalty")


def cache_size(tokens: int) -> int | None:
    """The smallest of ``CACHE_SIZES`` holding ``tokens``; None past the largest."""
    return next((size for size in CACHE_SIZES if tokens <= size), None)


def compile_mode(compile: bool | str) -> str | None:
    """The ``COMPILE_MODES`` entry that ``GritLM``'s ``compile`` argument asks for (None: eager)."""
    if compile is False or compile is None:
        return None
    if compile is True:
        return "exact"
    if compile not in COMPILE_MODES:
        raise ValueError(f"compile must be False, True or one of {', '.join(COMPILE_MODES)}, got {compile!r}")
    return compile


class CompiledDecode:
    """The static caches and compile settings of one model's compiled ``generate`` calls."""

    def __init__(self, model: torch.nn.Module, mode: str):
        from transformers import CompileConfig, GenerationConfig

        self.model, self.mode = model, mode
        self._default_generation = GenerationConfig()  # what "no token-changing setting" compares with
        use_grouped_attention(model)  # no copy of the cache per step for shared key/value heads
        if mode == "max-autotune":  # its C++ GEMMs replace plain products (F.linear), not the threaded split
            unthread_gemvs(model)
        self.config = CompileConfig(fullgraph=True, dynamic=False, mode=None if mode == "exact" else
                                    "max-autotune-no-cudagraphs")
        self.config._compile_all_devices = True  # transformers compiles only on accelerators unless told
        self.cache, self.shape = None, None  # the static cache and its (batch, size)
        self.compiled: set[tuple[int, int]] = set()  # (batch, size) decoded compiled so far
        self._seen: set[tuple[str, int, int]] = set()  # the same per loop ("greedy" or "generate")
        self._greedy_step = torch.compile(functools.partial(_greedy_step, model), fullgraph=True, dynamic=False,
                                          mode=self.config.mode)

    def generate(self, generate, batch: int, tokens: int, prefix=None, **kwargs):
        """``generate(**kwargs)`` (transformers' ``generate``) for ``batch`` sequences of up to
        ``tokens`` tokens, with a reset static cache of the right size and the compile config.

        ``prefix``: a transformers cache holding the keys/values of the first tokens of
        ``input_ids`` (a RAG doc cache); they are copied into the static cache, so the prefill
        runs over the rest only, as it would continuing ``prefix`` itself.
        """
        import torch._inductor.config
        from transformers import StaticCache

        shape = (batch, cache_size(tokens))
        if prefix is not None:
            kwargs["cache"] = prefix  # what every eager fallback below continues from
        if shape[1] is None:
            logger.warning("%d tokens exceed the largest compiled cache (%d): decoding eagerly", tokens, CACHE_SIZES[-1])
            return generate(**kwargs)
        if self.mode == "max-autotune" and self.compiled and shape not in self.compiled:
            # A step compiled with frozen weights was seen to run on with another cache's shape
            # (out-of-bounds writes), so max-autotune keeps the one shape of its first call.
            logger.warning("max-autotune decodes %d sequence(s) of up to %d tokens, compiled on the first call; "
                           "this call (%d, %d) decodes eagerly (compile=True compiles each size)",
                           *next(iter(self.compiled)), *shape)
            return generate(**kwargs)
        if self.shape != shape:
            self.cache = StaticCache(config=self.model.config, max_cache_len=shape[1])
            self.shape = shape
        else:
            with torch.inference_mode():
                self.cache.reset()
        start = 0
        if prefix is not None:
            start = _copy_prefix(prefix, self.cache)
            del kwargs["cache"]
        plain = batch == 1 and start < kwargs["input_ids"].shape[1] and self._plain_greedy(kwargs)
        loop = "greedy" if plain else "generate"
        first = (loop, *shape) not in self._seen
        if first:
            logger.warning("compiling the decode step (%s) for %d sequence(s) of up to %d tokens (once per size and "
                           "process; %s on a CPU)", self.mode, *shape,
                           "tens of seconds" if self.mode == "exact" else "minutes the first time")
        started = time.perf_counter()
        # Freezing is read when the step compiles, inside this call (as an option it is not honoured).
        with torch._inductor.config.patch(freezing=self.mode == "max-autotune"):
            if loop == "greedy":
                output = self._greedy(kwargs["input_ids"], start, kwargs["max_new_tokens"], kwargs["eos_token_id"],
                                      kwargs.get("min_new_tokens") or 0)
            else:
                output = generate(cache=self.cache, compile_config=self.config, **kwargs)
        if first:
            self._seen.add((loop, *shape))
            self.compiled.add(shape)
            logger.warning("compiled decode step ready: the first call took %.1f s", time.perf_counter() - started)
        return output

    def _plain_greedy(self, kwargs: dict) -> bool:
        """Whether ``kwargs`` ask for plain greedy decoding of whole (unpadded) prompts, with no
        generation setting of the model's that changes the tokens chosen."""
        if set(kwargs) - PLAIN_GREEDY or kwargs.get("do_sample") or not kwargs.get("max_new_tokens"):
            return False
        if not bool(kwargs["attention_mask"].all()):
            return False
        default, own = self._default_generation, self.model.generation_config
        return all(getattr(own, name, None) == getattr(default, name, None) for name in TOKEN_CHANGING_SETTINGS)

    def _greedy(self, input_ids: torch.Tensor, start: int, max_new_tokens: int, eos_token_id,
                min_new_tokens: int) -> torch.Tensor:
        """Greedy decoding of one sequence whose first ``start`` tokens are in the cache: an eager
        prefill of the rest, then the compiled step until an end token or ``max_new_tokens``; before
        ``min_new_tokens`` the end tokens cannot be chosen. The same tokens as transformers'
        ``generate``, without its per-step bookkeeping (~2 ms of a ~25 ms fp32 SmolLM2 step on 2 cores)."""
        ends = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or ())
        width, device = input_ids.shape[1], input_ids.device

        def choose(logits: torch.Tensor, chosen: int) -> torch.Tensor:
            if chosen < min_new_tokens and ends:
                logits[:, ends] = -torch.inf
            return logits.argmax(-1, keepdim=True)

        with torch.inference_mode():
            logits = self.model(input_ids=input_ids[:, start:], cache=self.cache, use_cache=True, logits_to_keep=1,
                                cache_position=torch.arange(start, width, device=device)).logits
            new = [choose(logits[:, -1].float(), 0)]
            position = torch.tensor([width], device=device)
            while len(new) < max_new_tokens and int(new[-1]) not in ends:
                new.append(choose(self._greedy_step(self.cache, new[-1], position), len(new)))
                position = position + 1
        return torch.cat([input_ids, *new], dim=1)


def _copy_prefix(prefix, cache) -> int:
    """Write every layer's keys/values of ``prefix`` at the first positions of the static
    ``cache``; returns how many positions that is."""
    with torch.inference_mode():
        for index, layer in enumerate(prefix.layers):
            positions = torch.arange(layer.keys.shape[-2], device=layer.keys.device)
            cache.update(layer.keys, layer.values, index, {"cache_position": positions})
    return prefix.get_seq_length()


def _greedy_step(model, cache, token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """The float32 logits after ``token`` at ``position`` (one sequence); the cache is updated in place."""
    return model(input_ids=token, cache=cache, cache_position=position, use_cache=True).logits[:, -1].float()
