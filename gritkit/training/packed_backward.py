"""Packed training steps: the generative backward over packed rows, and the single-pass unified step.

Both give the gradient of the padded steps in gritkit/training/backward.py (to float rounding). The LM
loss keeps its meaning because its weights follow the one rule of ``losses.lm_target_weights``,
decided per sample from the *logical* micro-batches (``generative_micro_batch_size`` samples in
batch order), not from how samples were packed into rows, and the denominator is the same global
unit count as unpacked.

The single pass puts embedding segments (bidirectional inside) and generative segments (causal
inside) in the same rows, so one forward and one backward serve both losses. The contrastive
loss couples all of a batch's queries and documents, so without GradCache every embedding
segment must be in that one graph. With GradCache it still works: a graph-free pass over the
embedding segments alone gives the loss and each vector's gradient, then the graph passes mix
embedding and generative segments, each backpropagating ``vector . its gradient`` plus its LM
terms. That saves the second embedding pass's separate forward, not the graph-free one; and
because the two passes lay samples out differently, dropout masks cannot be replayed, so this
combination needs a model without dropout.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..model.gritlm import decoder_of
from ..model.packing import Blocks, PackedBatch, balanced_bins, pack, packed_forward, pool_segments
from ..parallel.distributed import all_reduce_sum
from .losses import contrastive_loss, lm_loss_units, lm_target_weights, trained_counts
from .backward import StepSettings, autocast, plain_output_head

Items = Sequence[tuple[list[int], list[bool]]]


def packed_lm_terms(states: torch.Tensor, batch: PackedBatch, weights: torch.Tensor,
                    head: torch.nn.Module | None) -> torch.Tensor:
    """Weighted sum of the next-token losses of a packed batch.

    ``states`` are last hidden states (with ``head``) or logits. A position predicts the next token
    only inside its own segment; segments whose weight is 0 (embedding segments) are skipped.
    ``weights`` holds one weight per segment of ``batch``.
    """
    seg = batch.segment_ids
    weights = weights.to(seg.device)
    same = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] >= 0)
    positions = batch.flags[:, 1:].bool() & same
    positions &= weights[seg[:, 1:].clamp(min=0)] > 0
    selected = states[:, :-1][positions]
    logits = head(selected) if head is not None else selected
    losses = F.cross_entropy(logits.float(), batch.input_ids[:, 1:][positions], reduction="none")
    return (losses * weights[seg[:, 1:][positions]]).sum()


def row_groups(items: Items, capacity: int, rows_per_pass: int) -> list[list[int]]:
    """Item indices of each forward pass: ``rows_per_pass`` packed rows each."""
    bins = balanced_bins([len(ids) for ids, _ in items], capacity)
    return [sorted(i for b in bins[g: g + rows_per_pass] for i in b) for g in range(0, len(bins), rows_per_pass)]


def _lm_states(model, batch: PackedBatch, head):
    """Last hidden states when the head is applied at trained positions only, else logits."""
    if head is not None:
        return packed_forward(decoder_of(model), model.config, batch).last_hidden_state
    return packed_forward(model, model.config, batch).logits


def generative_backward_packed(model, items: Items, settings: StepSettings, *, capacity: int, weight: float = 1.0,
                               prefixes: Sequence[Blocks] | None = None,
                               before_backward: Callable[[bool], None] = lambda last: None, last: bool = True) -> float:
    """``steps.generative_backward`` over rows of ``capacity`` tokens, ``settings.rows_per_pass`` rows a pass.

    ``prefixes`` (one per item) opens each item with isolated blocks, its doc caches (``packing.Blocks``)."""
    processes = settings.processes
    counts = trained_counts(mask for _, mask in items)
    units = all_reduce_sum(lm_loss_units(counts, settings.aggregation, settings.micro_batch_size), processes)
    if units == 0:
        return 0.0
    head = plain_output_head(model) if settings.head_at_targets else None
    weights = lm_target_weights(counts, settings.aggregation, settings.micro_batch_size)
    scale = weight * processes.world_size / units
    groups = row_groups(items, capacity, settings.rows_per_pass)
    total = 0.0
    for index, group in enumerate(groups):
        batch = pack([items[i] for i in group], settings.pad_id, capacity, causal=True,
                     prefixes=None if prefixes is None else [prefixes[i] for i in group]).to(processes.device)
        with autocast(processes.device, settings.bf16):
            terms = packed_lm_terms(_lm_states(model, batch, head), batch, weights[group], head)
        before_backward(last and index == len(groups) - 1)
        (terms * scale).backward()
        total += terms.item()
    return all_reduce_sum(total, processes) / units


def _has_dropout(model) -> bool:
    config = model.config.get_text_config()
    rates = [getattr(config, k, 0.0) or 0.0 for k in ("attention_dropout", "hidden_dropout", "resid_pdrop",
                                                     "attn_pdrop", "embd_pdrop", "dropout")]
    modules = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    return any(float(r) > 0 for r in rates + modules)


def single_pass_backward(grit, queries: Items, documents: Items, generative: Items, settings: StepSettings, *,
                         capacity: int, lambda_rep: float = 1.0, lambda_gen: float = 1.0,
                         before_backward: Callable[[bool], None] = lambda last: None) -> tuple[float, float]:
    """Both losses' gradients from passes over rows that mix embedding and generative segments.

    Returns (local contrastive loss, global LM loss), the values the two-pass step returns.
    ``settings.chunk_size`` 0 runs everything in one forward and one backward; otherwise GradCache
    chunks of that many sequences give the embedding gradients first (see the module docstring).
    """
    processes, bf16, chunk_size = settings.processes, settings.bf16, settings.chunk_size
    model, device = grit.model, processes.device
    head = plain_output_head(model)
    if head is None:
        raise ValueError("single_pass needs an LM head that is a plain linear map of the last hidden state "
                         "(this model post-processes its logits); train with single_pass: false")
    embedding = list(queries) + list(documents)
    items = embedding + list(generative)
    n_q, n_e = len(queries), len(embedding)
    counts = trained_counts(mask for _, mask in generative)
    units = all_reduce_sum(lm_loss_units(counts, settings.aggregation, settings.micro_batch_size), processes)
    lm_weights = torch.cat([torch.zeros(n_e), lm_target_weights(counts, settings.aggregation,
                                                                   settings.micro_batch_size)])
    scale = lambda_gen * processes.world_size / max(1, units)
    causal = [grit.attention == "causal"] * n_e + [True] * len(generative)

    def loss_of(reps):
        return contrastive_loss(reps[:n_q], reps[n_q:], settings.temperature, settings.group_size,
                                processes.distributed, settings.matryoshka_dims)

    def forward(indices):
        batch = pack([items[i] for i in indices], settings.pad_id, capacity,
                     [causal[i] for i in indices]).to(device)
        hidden = packed_forward(decoder_of(model), model.config, batch).last_hidden_state
        local = [k for k, i in enumerate(indices) if i < n_e]
        reps = grit.project(pool_segments(hidden, batch, local, grit.pooling)) if local else None
        terms = packed_lm_terms(hidden, batch, lm_weights[list(indices)], head)
        return reps, [indices[k] for k in local], terms

    if not chunk_size or chunk_size >= max(len(queries), len(documents)):
        with autocast(device, bf16):
            reps, _, terms = forward(list(range(len(items))))
            loss = loss_of(reps)
        before_backward(True)
        (loss * lambda_rep + terms * scale).backward()
        return loss.item(), all_reduce_sum(terms.item(), processes) / max(1, units)

    if model.training and _has_dropout(model):
        raise ValueError("single_pass with embedding_chunk_size > 0 needs a model without dropout: its "
                         "graph-free and graph passes lay samples out differently, so dropout masks differ")
    with torch.no_grad(), autocast(device, bf16):
        cached = [grit.embed_packed(grit.pack(embedding[i: i + chunk_size], capacity))
                  for i in range(0, n_e, chunk_size)]
    reps = torch.cat(cached).requires_grad_()
    loss = loss_of(reps)
    (loss * lambda_rep).backward()  # gradients of the cached vectors only
    grads = reps.grad
    groups = row_groups(items, capacity, settings.rows_per_pass)
    total = 0.0
    for index, group in enumerate(groups):
        with autocast(device, bf16):
            part, owners, terms = forward(group)
            surrogate = terms * scale
            if part is not None:
                surrogate = surrogate + (part * grads[owners].to(part.dtype)).sum()
        before_backward(index == len(groups) - 1)
        surrogate.backward()
        total += terms.item()
    return loss.item(), all_reduce_sum(total, processes) / max(1, units)
