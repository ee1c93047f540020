"""The one thread that touches the model: a bounded queue, micro-batched embeddings, batched decoding.

torch modules and Hugging Face fast tokenizers are not safe to drive from several threads at
once, and one copy of the weights serves both jobs, so every model call runs on this thread.
Requests wait in a bounded queue (full: 503 with Retry-After, instead of growing without limit).
When the worker picks an embedding request it also takes every other embedding request waiting
(up to ``max_batch_size`` texts and ``SLICE_TOKENS`` tokens, after a short ``batch_wait_s`` for
stragglers) and embeds them in one forward pass per instruction; it waits for stragglers only when
it has nothing else to do, since on a busy worker requests gather by themselves during the action
in progress. A longer request (up to 2,048 texts) is taken a batch at a time, one batch per turn,
so it holds up decoding no longer than any other batch. Chat requests join a running batch
(``decoding.BatchDecoder``, up to ``max_running`` at once) that advances one token per decode
step. Embedding batches and newcomers' prefill (the chat requests waiting together, in short
passes while embeddings arrive, or a RAG call) are served between decode steps (see
``ModelWorker._next_action``), so neither job waits for the other to finish.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .decoding import BatchDecoder
from .errors import APIError
from .generation import GenerationJob
from .prompts import check_prompt_length

log = logging.getLogger("gritkit.serve")

# The most tokens one embedding batch takes (always at least one text), and the most tokens of
# embedding batches and of newcomers' prefill that run between two decode steps (each: the action
# in progress may cross it), so running chats never wait long for other work. Measured with 16
# chat clients x 32 tokens and one-text embedding requests (benchmarks/peers.py, gritkit-smol's
# base at fp32, 2 cores): 256 gave 76 chat tok/s and an embedding p95 of 0.28 s, 1,024 gave 65-71
# tok/s and 0.80-0.96 s.
SLICE_TOKENS = 256
# While embedding requests keep arriving (one within the last EMBEDDING_RECENT_S seconds),
# newcomers are prefilled in passes of at most ``prefill_pass_tokens`` padded tokens (at least one
# column of their prompts; ServeConfig's, 32 by default), with waiting embeddings served between
# two passes, so a one-text embedding waits for about one decode step's work, not for every
# newcomer's whole prompt: on one CPU thread gritkit-smol prefills ~3.5 ms a token (a 45-token
# prompt: ~165 ms) and runs a 16-row decode step in ~100 ms. Otherwise a pass takes the cycle's
# whole SLICE_TOKENS, since every pass reads all the weights once: passes of 32 cost 16 chat
# clients ~18% of their tokens/s while embeddings arrive (benchmarks/README.md, Serving).
EMBEDDING_RECENT_S = 2.0


@dataclass
class EmbeddingJob:
    """Texts to embed after one instruction; the future gets ``(vectors, token_count)``.

    ``param.format(i)`` names text ``i`` in errors (``input[3]``). The worker takes the texts in
    slices of up to ``max_batch_size`` texts and ``SLICE_TOKENS`` tokens; ``taken``, ``lengths``,
    ``tokens`` and ``parts`` are its record of them.
    """

    texts: list[str]
    instruction: str
    future: Future = field(default_factory=Future)
    param: str = "input[{}]"
    taken: int = field(default=0, init=False)  # texts handed to a batch so far
    lengths: list[int] | None = field(default=None, init=False)  # tokens of each input, counted when first taken
    tokens: int = field(default=0, init=False)  # tokens of all the texts, counted with the first slice
    parts: list[np.ndarray] = field(default_factory=list, init=False, repr=False)  # vectors of the slices done


@dataclass
class _Slice:
    """Texts ``start:stop`` of ``job``, one part of an embedding batch."""

    job: EmbeddingJob
    start: int
    stop: int

    @property
    def texts(self) -> list[str]:
        return self.job.texts[self.start: self.stop]


@dataclass
class CallJob:
    """Any other model work (e.g. a RAG answer): ``fn()`` runs on the worker, in generation order.

    When ``fn()`` returns a generator, the work is done one ``next()`` at a time, one per decode
    step of the running batch, so embeddings and other generations are served in between; the
    generator's return value is the result (``gritkit.rag.self_retrieval.self_retrieval_steps``).
    """

    fn: Callable[[], object]
    future: Future = field(default_factory=Future)
    steps: Iterator | None = field(default=None, init=False, repr=False)  # set by the worker


class ModelWorker:
    """Owns the model on one thread; ``submit_*`` may be called from any thread."""

    def __init__(self, model, max_queue: int = 64, max_batch_size: int = 64, max_input_tokens: int = 512,
                 batch_wait_s: float = 0.002, max_running: int = 16, prefill_pass_tokens: int = 32):
        self.model = model
        self.decoder = BatchDecoder(model, max_running=max_running, max_input_tokens=max_input_tokens)
        self._last = "step"  # what the worker did last: "step", "embed" or "prefill"
        self._prefilled = 0  # padded prompt tokens prefilled since the last decode step
        self._embedded = 0  # tokens of the embedding batches run since the last decode step
        self._embedding_seen = -math.inf  # time.monotonic() of the last embedding request
        self._stepping: list[CallJob] = []  # calls advancing one step at a time, beside the decode batch
        self.max_running, self.prefill_pass_tokens = max_running, prefill_pass_tokens
        self.max_queue, self.max_batch_size = max_queue, max_batch_size
        self.max_input_tokens, self.batch_wait_s = max_input_tokens, batch_wait_s
        self._embed: deque[EmbeddingJob] = deque()
        self._generate: deque[GenerationJob | CallJob] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="gritkit-model", daemon=True)
        self.batches: deque[int] = deque(maxlen=1024)  # texts per recent embedding forward pass
        self.embedded_texts = self.embedding_passes = 0  # totals since start, shown by /health

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish the job in progress, fail the waiting ones, and end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    @property
    def queued(self) -> int:
        return len(self._embed) + len(self._generate)

    def _admit(self, queue: deque, job) -> None:
        with self._cond:
            if self._stopping:
                raise APIError(503, "the server is shutting down", headers={"Retry-After": "5"})
            if self.queued >= self.max_queue:
                raise APIError(503, f"the server is busy ({self.max_queue} requests waiting); retry shortly",
                               code="queue_full", headers={"Retry-After": "1"})
            queue.append(job)
            self._cond.notify()

    def submit_embedding(self, job: EmbeddingJob) -> Future:
        self._admit(self._embed, job)
        self._embedding_seen = time.monotonic()
        return job.future

    def submit_generation(self, job: GenerationJob) -> None:
        self._admit(self._generate, job)

    def submit_call(self, job: CallJob) -> Future:
        self._admit(self._generate, job)
        return job.future

    # ------------------------------------------------------------------ worker thread
    def _loop(self) -> None:
        while True:
            with self._cond:
                while (not self.queued and not self.decoder.running and not self.decoder.prefilling and not self._stepping
                       and not self._stopping):
                    self._cond.wait()
                if self._stopping:
                    self._fail_waiting()
                    return
                action, payload = self._next_action()
            try:  # one bad request must never end the thread
                action(payload)
            except Exception as exc:  # noqa: BLE001 - reported to the jobs concerned; log and carry on
                if action == self._step:
                    self.decoder.fail_all(exc)
                elif isinstance(payload, GenerationJob):
                    payload.emit(("error", exc))
                log.exception("model worker error")

    def _next_action(self):
        """What the worker does next (called with the lock held).

        The worker runs in cycles that end with one decode step (a no-op when nothing decodes).
        Before the step: the newcomers' prefill (the chat requests at the head of the queue that
        are prefilled together, ``_take_newcomers``, in passes of ``prefill_pass_tokens``, or one
        stepped call), up to ``SLICE_TOKENS`` per cycle; a waiting embedding batch goes first, and
        after every other action, while the cycle's embedding batches hold fewer than
        ``SLICE_TOKENS`` tokens. So an embedding that arrives while the worker is busy waits for
        the action in progress, and, once a cycle's embeddings reached ``SLICE_TOKENS`` (a long
        request's slice), for the rest of the cycle; a newcomer is never starved, and decoding
        advances after at most about ``SLICE_TOKENS`` of prefill and ``2 * SLICE_TOKENS`` of
        embeddings (the batch that crosses the budget included). Embeddings go first
        because their clients wait for the whole answer, while a newcomer's prefill is one step
        among many of its answer.
        """
        if self._embed and self._last != "embed" and self._embedded < SLICE_TOKENS:
            return self._embedding_action()
        if self._prefilled < SLICE_TOKENS:
            if self.decoder.prefilling:
                self._last = "prefill"
                return self._prefill_pass, None
            first = self._generate[0] if self._generate else None
            if isinstance(first, CallJob) and len(self._stepping) < self.max_running:
                self._last, self._prefilled = "prefill", SLICE_TOKENS  # a call's work is its own; the step comes next
                return self._run_call, self._generate.popleft()
            if isinstance(first, GenerationJob) and self.decoder.has_room:
                self._last = "prefill"
                return self._start_newcomers, self._take_newcomers()
        return self._step, None

    def _take_newcomers(self) -> list[GenerationJob]:
        """The chat requests at the head of the queue that are prefilled together: as many as the
        batch has room for whose padded prompts fit ``SLICE_TOKENS`` (always the first)."""
        taken, width = [], 0
        while self._generate and isinstance(self._generate[0], GenerationJob) and len(taken) < self.decoder.room:
            tokens = max(width, self._generate[0].prompt_tokens)
            if taken and tokens * (len(taken) + 1) > SLICE_TOKENS:
                break
            taken.append(self._generate.popleft())
            width = tokens
        return taken

    def _start_newcomers(self, jobs: list[GenerationJob]) -> None:
        self.decoder.start(jobs)
        if self.decoder.prefilling:
            self._prefill_pass()

    def _prefill_pass(self, _=None) -> None:
        recent = time.monotonic() - self._embedding_seen < EMBEDDING_RECENT_S
        self._prefilled += self.decoder.prefill(self.prefill_pass_tokens if recent else SLICE_TOKENS - self._prefilled)

    def _embedding_action(self):
        batch = self._take_embedding_batch()
        self._last = "embed"
        self._embedded += sum(sum(piece.job.lengths[piece.start: piece.stop]) for piece in batch)
        return self._run_embeddings, batch

    def _step(self, _=None) -> None:
        self._last, self._prefilled, self._embedded = "step", 0, 0
        if self.decoder.running:
            self.decoder.step()
        for job in list(self._stepping):
            self._advance(job)

    def _advance(self, job: CallJob) -> None:
        """One unit of a stepped call's work; it leaves the running calls when it ends or fails."""
        try:
            next(job.steps)
        except StopIteration as done:
            self._stepping.remove(job)
            job.future.set_result(done.value)
        except Exception as exc:  # noqa: BLE001 - goes back to that request
            self._stepping.remove(job)
            job.future.set_exception(exc)

    def _take_embedding_batch(self) -> list[_Slice]:
        """Waiting embedding texts, up to ``max_batch_size`` texts and ``SLICE_TOKENS`` tokens (at
        least one text), as slices of their jobs (called with the lock held). A job stays first in
        the queue until its last slice is taken."""
        slices, size, tokens = [], 0, 0
        deadline = time.monotonic() + self.batch_wait_s
        while True:
            while self._embed and size < self.max_batch_size:
                job = self._embed[0]
                if job.future.done() or not self._measure(job):  # cancelled, failed, or untokenizable
                    self._embed.popleft()
                    continue
                stop = job.taken
                while stop < len(job.texts) and size + stop - job.taken < self.max_batch_size and (
                        (size == 0 and stop == job.taken) or tokens + job.lengths[stop] <= SLICE_TOKENS):
                    tokens += job.lengths[stop]
                    stop += 1
                if stop == job.taken:  # this batch is full
                    return slices
                slices.append(_Slice(job, job.taken, stop))
                size += stop - job.taken
                job.taken = stop
                if stop == len(job.texts):
                    self._embed.popleft()
            remaining = deadline - time.monotonic()
            busy = self.decoder.running or self.decoder.prefilling or self._stepping or self._generate
            if size >= self.max_batch_size or self._embed or remaining <= 0 or self._stopping or busy:
                return slices
            self._cond.wait(remaining)  # let requests sent at the same moment join this batch

    def _measure(self, job: EmbeddingJob) -> bool:
        """Count the tokens of each of ``job``'s inputs once (instruction and format included,
        untruncated, so an over-long text's count is exact); False when tokenizing fails (the
        job then has that error)."""
        if job.lengths is None:
            try:
                items = self.model.tokenize_for_embedding(job.texts, [job.instruction] * len(job.texts), sys.maxsize)
            except Exception as exc:  # noqa: BLE001 - goes back to that request
                job.future.set_exception(exc)
                return False
            job.lengths = [len(ids) for ids, _ in items]
        return True

    def _fail_waiting(self) -> None:
        error = APIError(503, "the server is shutting down", headers={"Retry-After": "5"})
        for job in self._embed:
            if not job.future.done():
                job.future.set_exception(error)
        for job in self._generate:
            if isinstance(job, CallJob):
                job.future.set_exception(error)
            else:
                job.emit(("error", error))
        for job in self._stepping:
            job.future.set_exception(error)
        self._embed.clear()
        self._generate.clear()
        self._stepping.clear()
        self.decoder.fail_all(error)

    def _run_embeddings(self, slices: list[_Slice]) -> None:
        # Each slice's texts are embedded with the texts of the same instruction; a job's vectors
        # go back with its last slice.
        live = [piece for piece in slices if self._start(piece)]
        by_instruction: dict[str, list[_Slice]] = {}
        for piece in live:
            by_instruction.setdefault(piece.job.instruction, []).append(piece)
        try:
            for instruction, group in by_instruction.items():
                texts = [text for piece in group for text in piece.texts]
                self.batches.append(len(texts))
                self.embedded_texts += len(texts)
                self.embedding_passes += 1
                out = self.model.encode(texts, instruction=instruction, batch_size=self.max_batch_size,
                                        max_length=self.max_input_tokens, show_progress_bar=False)
                start = 0
                for piece in group:
                    piece.job.parts.append(out[start: start + len(piece.texts)])
                    start += len(piece.texts)
        except Exception as exc:  # noqa: BLE001
            for piece in live:
                if not piece.job.future.done():
                    piece.job.future.set_exception(exc)
            raise
        for piece in live:
            if piece.stop == len(piece.job.texts):
                piece.job.future.set_result((np.concatenate(piece.job.parts), piece.job.tokens))

    def _start(self, piece: _Slice) -> bool:
        """Whether ``piece`` is to be embedded. A job's first slice starts it: a job whose client
        went away was cancelled, and the tokens of all its texts are counted (400 for one over the
        limit, before any of its forward passes; it fails alone, not the batch it arrived with)."""
        job = piece.job
        if piece.start > 0:
            return not job.future.done()
        if not job.future.set_running_or_notify_cancel():
            return False
        try:
            job.tokens = self._count_tokens(job)
        except Exception as exc:  # noqa: BLE001 - goes back to that request
            job.future.set_exception(exc)
            return False
        return True

    def _count_tokens(self, job: EmbeddingJob) -> int:
        """Tokens of the job's formatted inputs, each checked against ``max_input_tokens``."""
        for index, length in enumerate(job.lengths):
            name = job.param.format(index)
            check_prompt_length(length, self.max_input_tokens, name, f"{name} (instruction and format included)")
        return sum(job.lengths)

    def _run_call(self, job: CallJob) -> None:
        if job.future.set_running_or_notify_cancel():
            try:
                result = job.fn()
            except Exception as exc:  # noqa: BLE001 - goes back to that request
                job.future.set_exception(exc)
                return
            if isinstance(result, Generator):
                job.steps = result
                self._stepping.append(job)
                self._advance(job)
            else:
                job.future.set_result(result)
