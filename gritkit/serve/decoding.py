"""Continuous batching: chat requests join and leave one running batch between decode steps.

Newcomers that wait together are prefilled together: their prompts left-padded into one matrix
(each row at its own positions, padding masked) whose columns go through the model in one pass or
a few at a time (``start``, then ``prefill`` as often as the worker likes, decode steps of the
running batch in between: chunked prefill), so a burst of requests costs one pass, not one per
request with a decode step between each. Their caches join the running batch: every
layer's keys and values are left-padded to a common length and stacked along the batch
(``batch_cache``, whose buffers have room so a decode step writes in place), and a 0/1 mask marks
the padding. One decode step feeds every running row its last token
(each at its own position) and picks each row's next token with that row's own sampling settings
and its own ``torch.Generator``, so a seeded request samples the same tokens alone or in a batch.
A row leaves when it ends (EOS, stop string, ``max_tokens``, or its client left); columns that
are padding in every remaining row are cut off.

transformers' own continuous batching (``generate_batch`` / ``init_continuous_batching``) was
not used: it runs its own thread that drives the model and switches the model's attention
implementation to a paged one, while this server must interleave bidirectional embedding passes
on the same weights from its single worker thread, and it has no per-request seeds.

Only models whose cache is plain full attention (``DynamicLayer`` in every layer) are batched;
``batchable`` tells. Others (sliding-window or recurrent caches) run with one row at a time, the
same code with nothing to merge.
"""

from __future__ import annotations

import sys
from collections import deque
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from ..model.sampling import next_token
from . import batch_cache
from .errors import APIError
from .generation import GenerationJob, GenerationResult, TextDeltas, cut_at_stop
from .prompts import check_prompt_length


def batchable(model) -> bool:
    """Whether ``model`` (a GritLM) has a cache that ``BatchDecoder`` can merge and split."""
    cache = DynamicCache(config=model.model.config)
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


@dataclass
class _Row:
    job: GenerationJob
    deltas: TextDeltas  # also holds the row's generated ids
    generator: torch.Generator
    prompt_tokens: int
    position: int  # position of the row's last token (the one the next step feeds)
    last: int  # that token
    ended: bool = False  # its end ("done") was emitted


@dataclass
class _Prefill:
    """Newcomers prefilled together: their prompts left-padded into one matrix, whose columns go
    through the model a few at a time into one cache."""

    rows: list[_Row]
    inputs: torch.Tensor  # [rows, width] prompt ids, left-padded
    mask: torch.Tensor  # [rows, width], 1 = a real token
    positions: torch.Tensor  # [rows, width], each row's own positions
    cache: DynamicCache
    done: int = 0  # columns prefilled so far


class BatchDecoder:
    """The running batch of one worker thread; not thread-safe (the worker alone calls it)."""

    def __init__(self, model, max_running: int, max_input_tokens: int):
        self.model, self.max_input_tokens = model, max_input_tokens
        self.max_running = max_running if batchable(model) else 1
        self.rows: list[_Row] = []
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # [rows, cached length], 1 = a real token
        self.steps = 0  # decode steps run since start
        self.tokens = 0  # tokens those steps chose (one per running row per step), since start
        self.widths: deque[int] = deque(maxlen=1024)  # rows per recent decode step
        self.pending: _Prefill | None = None  # the newcomers being prefilled, a few columns at a time

    @property
    def running(self) -> int:
        return len(self.rows)

    @property
    def room(self) -> int:
        return self.max_running - len(self.rows) - (len(self.pending.rows) if self.pending else 0)

    @property
    def has_room(self) -> bool:
        return self.room > 0

    def admit(self, jobs: list[GenerationJob]) -> None:
        """Prefill ``jobs`` whole (``start`` and every ``prefill`` chunk at once)."""
        self.start(jobs)
        while self.prefilling:
            self.prefill(sys.maxsize)

    def start(self, jobs: list[GenerationJob]) -> None:
        """Emit ``jobs``' starts and make them the group that ``prefill`` prefills (at most as many
        as there is room for, and only when no group is prefilling; the caller checks). A prompt
        over the limit gets a 400 through its job's ``emit`` and leaves the group."""
        assert self.pending is None, "a group is prefilling already"
        rows, prompts, unfinished = [], [], list(jobs)
        try:
            for job in jobs:
                started = self._start(job)
                if started is None:
                    unfinished.remove(job)
                else:
                    rows.append(started[0])
                    prompts.append(started[1])
        except Exception as error:
            for job in unfinished:
                job.emit(("error", error))
            raise
        if rows:
            width = max(len(ids) for ids in prompts)
            inputs = torch.tensor([[0] * (width - len(ids)) + ids for ids in prompts])
            mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts])
            self.pending = _Prefill(rows, inputs, mask, (mask.cumsum(dim=1) - 1).clamp(min=0), self._new_cache())

    @property
    def prefilling(self) -> bool:
        return self.pending is not None

    def prefill(self, tokens: int) -> int:
        """Prefill the next columns of the group ``start`` made, at most ``tokens`` padded tokens
        (at least one column); after its last column, emit its rows' first tokens and add them to
        the batch. Returns the padded tokens prefilled.

        An error goes to every job of the group that has not had its end, then propagates (the
        worker logs it)."""
        group = self.pending
        rows, width = group.inputs.shape
        stop = min(width, group.done + max(1, tokens // rows))
        try:
            last = self._prefill_columns(group, stop)
            prefilled = rows * (stop - group.done)
            group.done = stop
            if stop == width:
                self.pending = None
                self._join(group, last)
        except Exception as error:
            self.pending = None
            for row in group.rows:
                if not row.ended:
                    row.job.emit(("error", error))
            raise
        return prefilled

    def _prefill_columns(self, group: _Prefill, stop: int) -> torch.Tensor:
        """Run the group's columns ``group.done:stop`` into its cache; the logits of the last one."""
        device = self.model.device
        with torch.inference_mode():
            out = self.model.model(input_ids=group.inputs[:, group.done:stop].to(device),
                                   attention_mask=group.mask[:, :stop].to(device),
                                   position_ids=group.positions[:, group.done:stop].to(device),
                                   cache=group.cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1]

    def _join(self, group: _Prefill, logits: torch.Tensor) -> None:
        """The prefilled group's first tokens chosen; its rows that go on join the batch."""
        # Each prompt's last token is already in the cache: a row's next step feeds its new token.
        keep = [i for i, row in enumerate(group.rows) if self._take(row, logits[i])]
        if not keep:
            return
        mask, cache = group.mask, group.cache
        if len(keep) < len(group.rows):
            index = torch.tensor(keep)
            mask, first = _kept_columns(mask, index)
            batch_cache.keep(cache, index, first)
        self._append(cache, mask)
        self.rows += [group.rows[i] for i in keep]

    def _start(self, job: GenerationJob) -> tuple[_Row, list[int]] | None:
        """``job``'s row and prompt ids, its start emitted; None when it is cancelled, over the
        limit or asks for no tokens (then it has had its end)."""
        if job.cancelled.is_set():
            return None
        ids = self.model.chat_input_ids(job.messages)
        try:  # the routes have checked already; this keeps the decoder safe on its own
            check_prompt_length(len(ids), self.max_input_tokens, param="messages")
        except APIError as error:
            job.emit(("error", error))
            return None
        job.emit(("start", len(ids)))
        generator = torch.Generator()
        if job.seed is None:
            generator.seed()
        else:
            generator.manual_seed(job.seed)
        on_text = (lambda text: job.emit(("delta", text))) if job.stream else None
        deltas = TextDeltas(self.model.tokenizer, job.stop, on_text)
        row = _Row(job, deltas, generator, len(ids), len(ids) - 1, ids[-1])
        if job.max_new_tokens < 1:
            self._finish(row)
            return None
        return row, ids

    def step(self) -> None:
        """One decode step for every running row; rows that end leave the batch."""
        device = self.model.device
        inputs = torch.tensor([[row.last] for row in self.rows], device=device)
        positions = torch.tensor([[row.position] for row in self.rows], device=device)
        mask = torch.cat([self.mask, torch.ones(len(self.rows), 1, dtype=self.mask.dtype)], dim=1)
        with torch.inference_mode():
            out = self.model.model(input_ids=inputs, attention_mask=mask.to(device), position_ids=positions,
                                   cache=self.cache, use_cache=True)
        self.mask, self.steps, self.tokens = mask, self.steps + 1, self.tokens + len(self.rows)
        self.widths.append(len(self.rows))
        keep = [i for i, row in enumerate(self.rows) if self._take(row, out.logits[i, -1])]
        if len(keep) < len(self.rows):
            self._keep(keep)

    def fail_all(self, error: Exception) -> None:
        """End every running or prefilling row with ``error`` (a failed step, or shutdown) and empty
        the batch."""
        for row in self.rows + (self.pending.rows if self.pending else []):
            row.job.emit(("error", error))
        self.rows, self.cache, self.mask, self.pending = [], None, None, None

    # ------------------------------------------------------------------ rows
    def _take(self, row: _Row, logits: torch.Tensor) -> bool:
        """Choose ``row``'s next token from ``logits``; False (and the row is finished) if it ends."""
        job = row.job
        token = next_token(logits, job.temperature, job.top_p, row.generator)
        row.deltas.add(token)
        row.position, row.last = row.position + 1, token
        eos = token == self.model.tokenizer.eos_token_id and not job.ignore_eos
        ended = eos or row.deltas.stopped or job.cancelled.is_set() or len(row.deltas.ids) >= job.max_new_tokens
        if ended:
            self._finish(row)
        return not ended

    def _finish(self, row: _Row) -> None:
        row.ended = True
        ids = row.deltas.ids
        text, hit_stop = cut_at_stop(self.model.tokenizer.decode(ids, skip_special_tokens=True), row.job.stop)
        if row.job.stream and len(text) > row.deltas.sent:
            row.job.emit(("delta", text[row.deltas.sent:]))
        ended_by_eos = bool(ids) and ids[-1] == self.model.tokenizer.eos_token_id and not row.job.ignore_eos
        finish = "stop" if hit_stop or ended_by_eos or len(ids) < row.job.max_new_tokens else "length"
        row.job.emit(("done", GenerationResult(text, finish, row.prompt_tokens, len(ids))))

    # ------------------------------------------------------------------ the batch cache
    def _new_cache(self) -> DynamicCache:
        config = self.model.model.config
        return batch_cache.roomy_cache(config) if self.max_running > 1 else DynamicCache(config=config)

    def _append(self, cache: DynamicCache, mask: torch.Tensor) -> None:
        """Add a prefill cache's rows (left-padded, ``mask`` marking their tokens) to the batch."""
        if self.cache is None:
            self.cache, self.mask = cache, mask
            return
        width = max(mask.shape[1], self.mask.shape[1])
        batch_cache.merge(self.cache, cache, self.mask.shape[1])
        self.mask = torch.cat([batch_cache.left_pad(self.mask, width), batch_cache.left_pad(mask, width)], dim=0)

    def _keep(self, keep: list[int]) -> None:
        """Keep rows ``keep`` and cut the columns that are padding in all of them."""
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache, self.mask = None, None
            return
        index = torch.tensor(keep)
        self.mask, first = _kept_columns(self.mask, index)
        batch_cache.keep(self.cache, index, first)


def _kept_columns(mask: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``mask``'s ``rows`` without the leading columns that are padding in all of them, and the
    index of the first column kept (the first that some row really uses)."""
    mask = mask[rows]
    first = int(mask.any(dim=0).long().argmax())
    return mask[:, first:], first
