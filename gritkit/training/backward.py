"""The two halves of a GRIT optimiser step: embedding backward (GradCache) and generative
backward (gradient accumulation). Both only accumulate gradients; the loop steps the optimiser.

GradCache (Gao et al., 2021): the contrastive loss couples every query with every document, so a
large batch cannot simply be split into micro-batches. Instead (1) all representations are
computed in chunks without a graph, (2) the loss and its gradient with respect to the
representations are computed on those cached vectors, (3) each chunk is run again with a graph
and back-propagated with its slice of that gradient. Memory is bounded by one chunk; the cost is
one extra forward pass. The random state is replayed per chunk so dropout masks match.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..model.gritlm import decoder_of
from ..parallel.distributed import Processes, all_reduce_sum
from .data import collate_generative
from .losses import contrastive_loss, lm_loss_terms, lm_loss_units, lm_target_weights, trained_counts

Items = Sequence[tuple[list[int], list[bool]]]


@dataclass(frozen=True)
class StepSettings:
    """How a step's backward passes compute, decided once per run (``from_config``); what differs
    between two passes of one step (a loss weight, a row length) is an argument of the pass."""

    processes: Processes = field(default_factory=Processes)
    bf16: bool = False
    pad_id: int = 0
    # contrastive side
    temperature: float = 0.02
    group_size: int = 1  # documents per query: its positive, then hard negatives
    chunk_size: int = 0  # GradCache chunk in sequences; 0: one piece
    matryoshka_dims: tuple[int, ...] = ()
    # next-token side
    micro_batch_size: int = 8  # logical micro-batch of the LM loss's weighting (losses.lm_target_weights)
    aggregation: str = "mixed"
    rows_per_pass: int = 8  # packed rows per forward pass
    head_at_targets: bool = True  # LM head only at trained positions where it is a plain map (plain_output_head)

    @classmethod
    def from_config(cls, config, processes: Processes, bf16: bool, pad_id: int) -> "StepSettings":
        """The settings a TrainConfig asks for."""
        return cls(processes=processes, bf16=bf16, pad_id=pad_id, temperature=config.temperature,
                   group_size=config.train_group_size, chunk_size=config.embedding_chunk_size,
                   matryoshka_dims=tuple(config.matryoshka_dims), micro_batch_size=config.generative_micro_batch_size,
                   aggregation=config.loss_gen_aggregation, rows_per_pass=config.generative_micro_batch_size)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on ``device`` when ``enabled``, otherwise nothing."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _chunks(items: Items, size: int) -> list:
    return [items[i: i + size] for i in range(0, len(items), size)]


def _rng_state(device: torch.device):
    return torch.get_rng_state(), (torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def _set_rng_state(state, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def embedding_backward(grit, queries: Items, documents: Items, settings: StepSettings, *, weight: float = 1.0,
                       pack_length: int = 0, before_backward: Callable[[bool], None] = lambda last: None,
                       last: bool = True) -> float:
    """Accumulate ``weight`` x the gradient of the contrastive loss; return the local loss.

    ``queries`` and ``documents`` are this process's tokenised items (see
    GritLM.tokenize_for_embedding); ``settings.chunk_size`` 0 runs the batch in one piece,
    otherwise GradCache in chunks of that many sequences. ``before_backward(is_last)`` is called before
    each backward pass that reaches the model (FSDP syncs gradients on the last one only, which
    is this call's last when ``last``). ``pack_length`` > 0 packs each pass's sequences into rows
    of that many tokens (gritkit/model/packing.py) instead of padding them; the vectors are the same.
    """
    device, bf16 = settings.processes.device, settings.bf16
    chunk_size = settings.chunk_size

    def loss_of(q, d):
        return contrastive_loss(q, d, settings.temperature, settings.group_size, settings.processes.distributed,
                                settings.matryoshka_dims)

    def embed(items):
        with autocast(device, bf16):
            if pack_length:
                return grit.embed_packed(grit.pack(items, pack_length))
            return grit.embed(grit.collate(items))

    if not chunk_size or chunk_size >= max(len(queries), len(documents)):
        if pack_length:  # one pass: queries and documents fill each other's rows
            both = embed(list(queries) + list(documents))
            q, d = both[: len(queries)], both[len(queries):]
        else:
            q, d = embed(queries), embed(documents)
        loss = loss_of(q, d)
        before_backward(last)
        (loss * weight).backward()
        return loss.item()

    pieces = _chunks(queries, chunk_size) + _chunks(documents, chunk_size)
    states, cached = [], []
    with torch.no_grad():
        for piece in pieces:
            states.append(_rng_state(device))
            cached.append(embed(piece))
    n_query_chunks = len(_chunks(queries, chunk_size))
    q = torch.cat(cached[:n_query_chunks]).requires_grad_()
    d = torch.cat(cached[n_query_chunks:]).requires_grad_()
    loss = loss_of(q, d)
    (loss * weight).backward()  # gradients of the cached representations only
    grads = list(q.grad.split([len(p) for p in pieces[:n_query_chunks]])) + \
        list(d.grad.split([len(p) for p in pieces[n_query_chunks:]]))
    for index, (piece, state, grad) in enumerate(zip(pieces, states, grads)):
        _set_rng_state(state, device)
        rep = embed(piece)
        before_backward(last and index == len(pieces) - 1)
        rep.backward(grad)
    return loss.item()


def generative_backward(model, items: Items, settings: StepSettings, *, weight: float = 1.0,
                        before_backward: Callable[[bool], None] = lambda last: None, last: bool = True) -> float:
    """Accumulate ``weight`` x the gradient of the LM loss over micro-batches; return the global loss.

    The denominator (tokens, samples or micro-batches of the whole global batch) is counted
    before any forward pass, so accumulation and several processes give the same gradient as
    one pass over the global batch (see gritkit/training/losses.py).
    """
    processes, size = settings.processes, settings.micro_batch_size
    counts = trained_counts(mask for _, mask in items)
    units = all_reduce_sum(lm_loss_units(counts, settings.aggregation, size), processes)
    if units == 0:
        return 0.0
    weights = lm_target_weights(counts, settings.aggregation, size)
    head = plain_output_head(model) if settings.head_at_targets else None
    scale = weight * processes.world_size / units
    total = 0.0
    pieces = _chunks(items, size)
    for index, start in enumerate(range(0, len(items), size)):
        batch = collate_generative(pieces[index], settings.pad_id).to(processes.device)
        with autocast(processes.device, settings.bf16):
            forward = decoder_of(model) if head is not None else model
            outputs = forward(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
            states = outputs.last_hidden_state if head is not None else outputs.logits
            terms = lm_loss_terms(states, batch.input_ids, batch.loss_mask, weights[start: start + size], head=head)
        before_backward(last and index == len(pieces) - 1)
        (terms * scale).backward()
        total += terms.item()
    return all_reduce_sum(total, processes) / units


# model -> whether its logits are exactly head(last hidden state); probed once per model
_PLAIN_HEADS: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()


def plain_output_head(model) -> torch.nn.Module | None:
    """The LM head when logits are exactly ``head(last hidden state)``, else None.

    Most answers are a small share of a padded chat batch (~16% of positions in the quickstart's
    data), so the next-token loss applies the head only at trained positions instead of computing
    (batch x tokens x vocabulary) logits, the largest matmul of a small model. Architectures that
    post-process logits (soft-capping, scaling) fail the probe and keep the full forward pass.
    The probe runs once per model on a few tokens.
    """
    head = model.get_output_embeddings()
    if head is None:
        return None
    plain = _PLAIN_HEADS.get(model)
    if plain is None:
        ids = (torch.arange(1, 9, device=head.weight.device) % head.weight.shape[0])[None]
        was_training = model.training
        model.eval()  # dropout would make the two passes differ
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits.float()
            hidden = decoder_of(model)(input_ids=ids, use_cache=False).last_hidden_state
            plain = torch.allclose(head(hidden).float(), logits, rtol=1e-4, atol=1e-5)
        model.train(was_training)
        _PLAIN_HEADS[model] = plain
    return head if plain else None
