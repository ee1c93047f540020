"""GRIT's two objectives: contrastive InfoNCE over embeddings, next-token loss over answers.

How the losses are scaled across processes (so that the gradient equals that of one process
running the whole global batch):

- Contrastive: each process scores its own queries against the documents of *all* processes
  (gathered with a gather whose backward sums the incoming gradients over processes) and takes
  the mean over its own queries. The global loss is the mean over all queries, i.e. the
  average of the per-process means (equal shares). The gather's backward delivers to each
  process the gradient of every process's loss with respect to its documents, so the
  per-process gradients sum to W times the global gradient, and averaging gradients over the W
  processes (as DDP and FSDP do) gives exactly the global gradient.
- Language modelling: ``lm_loss_terms`` returns a weighted sum (``lm_target_weights``, one rule
  for padded and packed rows), and the caller divides it by the number of units (tokens, samples
  or micro-batches, see ``lm_loss_units``) of the whole global batch, counted once before the
  step, then multiplies by W so that the gradient average over processes again equals the global
  gradient. Gradient accumulation over micro-batches sums.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def contrastive_loss(queries: torch.Tensor, documents: torch.Tensor, temperature: float = 0.02,
                     group_size: int = 1, cross_device: bool = False,
                     matryoshka_dims: tuple[int, ...] | list[int] = ()) -> torch.Tensor:
    """InfoNCE with cosine similarity: mean over ``queries`` (n, dim) of the cross-entropy of
    each query's positive among all documents.

    ``documents`` (n * group_size, dim) holds each query's group in order: its positive, then
    ``group_size - 1`` hard negatives; every other document of the batch is an in-batch negative.
    With ``cross_device`` the documents of all processes are gathered first (torch.distributed
    must be initialised and all processes must pass the same sizes). ``matryoshka_dims``
    (Kusupati et al., 2022) adds the same loss on the first d dimensions of every vector for each
    d listed, each prefix normalised on its own; the result is the mean over the full size and
    those prefixes, so that truncated embeddings keep working.
    """
    if documents.shape[0] != queries.shape[0] * group_size:
        raise ValueError(f"{queries.shape[0]} queries with group_size={group_size} need "
                         f"{queries.shape[0] * group_size} documents, got {documents.shape[0]}")
    full = queries.shape[-1]
    bad = [d for d in matryoshka_dims if not 1 <= d < full]
    if bad:
        raise ValueError(f"matryoshka_dims must lie between 1 and the embedding size {full} - 1, got {bad}")
    queries, documents = queries.float(), documents.float()
    offset = 0
    if cross_device:
        from ..parallel.distributed import gather_with_grad

        offset = torch.distributed.get_rank() * queries.shape[0]
        documents = gather_with_grad(documents)
    labels = (offset + torch.arange(queries.shape[0], device=queries.device)) * group_size
    losses = []
    for size in (full, *matryoshka_dims):
        q = F.normalize(queries[:, :size], dim=-1)
        d = F.normalize(documents[:, :size], dim=-1)
        losses.append(F.cross_entropy(q @ d.T / temperature, labels))  # scores: (n, all documents)
    return losses[0] if len(losses) == 1 else torch.stack(losses).mean()


def trained_counts(loss_masks) -> list[int]:
    """Trained targets of each sample: its loss-mask tokens after the first (position 0 is never
    predicted). ``loss_masks`` is one mask per sample (lists, or the rows of a tensor)."""
    return [int(sum(mask[1:])) for mask in loss_masks]


def lm_target_weights(counts: Sequence[int], aggregation: str, micro_batch_size: int) -> torch.Tensor:
    """The weight of each trained target of each sample (one weight per sample) under ``aggregation``.

    The one rule for the LM loss, padded or packed: samples are grouped in batch order into logical
    micro-batches of ``micro_batch_size``, whatever rows they are computed in, and a target weighs
    ``token``: 1 (long answers weigh more); ``sample``: 1 / the sample's trained targets (each
    sample's mean token loss); ``mixed``: 1 / its micro-batch's trained targets (the micro-batch's
    mean token loss, the paper's "mix": token level inside a micro-batch, sample level across
    micro-batches and devices). The weighted sum is then divided by ``lm_loss_units``.
    """
    if aggregation == "token":
        return torch.ones(len(counts))
    if aggregation == "sample":
        return torch.tensor([1.0 / max(1, c) for c in counts])
    if aggregation == "mixed":
        weights = []
        for start in range(0, len(counts), micro_batch_size):
            block = counts[start: start + micro_batch_size]
            weights += [1.0 / max(1, sum(block))] * len(block)
        return torch.tensor(weights)
    raise ValueError(f"unknown loss_gen_aggregation {aggregation!r}; use token, sample or mixed")


def lm_loss_units(counts: Sequence[int], aggregation: str, micro_batch_size: int) -> int:
    """The denominator ``counts`` add under ``aggregation``: trained tokens, samples with a trained
    target, or micro-batches with a trained target."""
    if aggregation == "token":
        return sum(counts)
    if aggregation == "sample":
        return sum(c > 0 for c in counts)
    return sum(sum(counts[i: i + micro_batch_size]) > 0 for i in range(0, len(counts), micro_batch_size))


def lm_loss_terms(outputs: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor, weights: torch.Tensor,
                  head: torch.nn.Module | None = None) -> torch.Tensor:
    """Weighted sum of a padded micro-batch's next-token losses; ``weights`` holds one weight per
    sample (``lm_target_weights``). ``outputs`` are its full (batch, tokens, vocabulary) logits, or,
    with ``head``, its last hidden states: the head is then applied only at trained positions (same
    value and gradient, a fraction of the largest matmul of a small model).
    """
    positions = loss_mask[:, 1:].bool()  # position t predicts token t + 1
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None].expand_as(positions)[positions]
    selected = outputs[:, :-1][positions]
    logits = head(selected) if head is not None else selected
    losses = F.cross_entropy(logits.float(), input_ids[:, 1:][positions], reduction="none")
    return (losses * weights.to(losses.device)[rows]).sum()
