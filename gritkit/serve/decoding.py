"""Continuous batching: chat requests join and leave one running batch between decode steps.

Each request is prefilled alone (its prompt's keys/values computed in one forward pass without
padding, exactly as it would be served alone), then its cache is appended to the running batch:
every layer's keys and values are left-padded to a common length and concatenated along the
batch, and a 0/1 mask marks the padding. One decode step feeds every running row its last token
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

from collections import deque
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from ..model.sampling import next_token
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


class BatchDecoder:
    """The running batch of one worker thread; not thread-safe (the worker alone calls it)."""

    def __init__(self, model, max_running: int, max_input_tokens: int):
        self.model, self.max_input_tokens = model, max_input_tokens
        self.max_running = max_running if batchable(model) else 1
        self.rows: list[_Row] = []
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # [rows, cached length], 1 = a real token
        self.steps = 0  # decode steps run since start
        self.widths: deque[int] = deque(maxlen=1024)  # rows per recent decode step

    @property
    def running(self) -> int:
        return len(self.rows)

    @property
    def has_room(self) -> bool:
        return len(self.rows) < self.max_running

    def admit(self, job: GenerationJob) -> None:
        """Prefill ``job`` alone, emit its start and first token, and add it to the batch.

        A prompt over the limit gets a 400 through ``job.emit``; other errors propagate."""
        if job.cancelled.is_set():
            return
        ids = self.model.chat_input_ids(job.messages)
        try:  # the routes have checked already; this keeps the decoder safe on its own
            check_prompt_length(len(ids), self.max_input_tokens, param="messages")
        except APIError as error:
            job.emit(("error", error))
            return
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
            return
        inputs = torch.tensor([ids], device=self.model.device)
        cache = DynamicCache(config=self.model.model.config)
        with torch.inference_mode():
            out = self.model.model(input_ids=inputs, cache=cache, use_cache=True, logits_to_keep=1)
        # The prompt's last token is already in the cache: the row's next step feeds the new token.
        if self._take(row, out.logits[0, -1]):
            self._append(cache)
            self.rows.append(row)

    def step(self) -> None:
        """One decode step for every running row; rows that end leave the batch."""
        device = self.model.device
        inputs = torch.tensor([[row.last] for row in self.rows], device=device)
        positions = torch.tensor([[row.position] for row in self.rows], device=device)
        mask = torch.cat([self.mask, torch.ones(len(self.rows), 1, dtype=self.mask.dtype)], dim=1)
        with torch.inference_mode():
            out = self.model.model(input_ids=inputs, attention_mask=mask.to(device), position_ids=positions,
                                   cache=self.cache, use_cache=True)
        self.mask, self.steps = mask, self.steps + 1
        self.widths.append(len(self.rows))
        keep = [i for i, row in enumerate(self.rows) if self._take(row, out.logits[i, -1])]
        if len(keep) < len(self.rows):
            self._keep(keep)

    def fail_all(self, error: Exception) -> None:
        """End every running row with ``error`` (a failed step, or shutdown) and empty the batch."""
        for row in self.rows:
            row.job.emit(("error", error))
        self.rows, self.cache, self.mask = [], None, None

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
        ids = row.deltas.ids
        text, hit_stop = cut_at_stop(self.model.tokenizer.decode(ids, skip_special_tokens=True), row.job.stop)
        if row.job.stream and len(text) > row.deltas.sent:
            row.job.emit(("delta", text[row.deltas.sent:]))
        ended_by_eos = bool(ids) and ids[-1] == self.model.tokenizer.eos_token_id and not row.job.ignore_eos
        finish = "stop" if hit_stop or ended_by_eos or len(ids) < row.job.max_new_tokens else "length"
        row.job.emit(("done", GenerationResult(text, finish, row.prompt_tokens, len(ids))))

    # ------------------------------------------------------------------ the batch cache
    def _append(self, cache: DynamicCache) -> None:
        """Add a one-row prefill cache to the batch, left-padding whichever side is shorter."""
        length = cache.get_seq_length()
        new_mask = torch.ones(1, length, dtype=torch.long)
        if self.cache is None:
            self.cache, self.mask = cache, new_mask
            return
        width = max(length, self.mask.shape[1])
        for layer, new in zip(self.cache.layers, cache.layers):
            layer.keys = torch.cat([_left_pad(layer.keys, width), _left_pad(new.keys, width)], dim=0)
            layer.values = torch.cat([_left_pad(layer.values, width), _left_pad(new.values, width)], dim=0)
        self.mask = torch.cat([_left_pad(self.mask, width), _left_pad(new_mask, width)], dim=0)

    def _keep(self, keep: list[int]) -> None:
        """Keep rows ``keep`` and cut the columns that are padding in all of them."""
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache, self.mask = None, None
            return
        index = torch.tensor(keep)
        mask = self.mask[index]
        first = int(mask.any(dim=0).long().argmax())  # the first column some row really uses
        self.mask = mask[:, first:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index.to(layer.keys.device), :, first:]
            layer.values = layer.values[index.to(layer.values.device), :, first:]


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """``tensor`` ([batch, ..., length] for a mask, [batch, heads, length, dim] for keys and
    values) with zeros on the left of its length axis up to ``width``."""
    axis = 1 if tensor.dim() == 2 else 2
    missing = width - tensor.shape[axis]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[axis] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=axis)
