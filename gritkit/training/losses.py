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
- Language modelling: ``lm_loss_terms`` returns a sum, and the caller divides it by the number
  of units (tokens, samples or micro-batches, see ``lm_loss_units``) of the whole global
  batch, counted once before the step, then multiplies by W so that the gradient average over
  processes again equals the global gradient. Gradient accumulation over micro-batches sums.
"""

from __future__ import annotations

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


def target_positions(input_ids: torch.Tensor, loss_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(positions, targets, rows): where a next-token loss is trained, what it predicts, which sample.

    Position t predicts token t + 1; a target counts when ``loss_mask`` is 1 on it. ``positions``
    is a (batch, tokens - 1) bool mask; ``targets`` and ``rows`` list the trained targets in order.
    """
    positions = loss_mask[:, 1:].bool()
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None].expand_as(positions)[positions]
    return positions, input_ids[:, 1:][positions], rows


def aggregate_lm_losses(losses: torch.Tensor, rows: torch.Tensor, batch_size: int, aggregation: str) -> torch.Tensor:
    """The micro-batch's contribution to the LM loss before division by the global unit count.

    ``losses`` are the per-target cross-entropies of the micro-batch and ``rows`` their samples.
    ``token``: sum of token losses (units: trained tokens), long answers weigh more;
    ``sample``: sum over samples of each sample's mean token loss (units: samples);
    ``mixed``: the micro-batch's mean token loss (units: micro-batches), the paper's "mix":
    token level inside a micro-batch, sample level across micro-batches and devices.
    """
    if aggregation == "token":
        return losses.sum()
    if aggregation == "sample":
        sums = losses.new_zeros(batch_size).index_add(0, rows, losses)
        counts = torch.bincount(rows, minlength=batch_size).to(losses.dtype)
        return (sums / counts.clamp(min=1)).sum()
    if aggregation == "mixed":
        return losses.sum() / max(1, losses.numel())
    raise ValueError(f"unknown loss_gen_aggregation {aggregation!r}; use token, sample or mixed")


def lm_loss_terms(outputs: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor,
                  aggregation: str, head: torch.nn.Module | None = None) -> torch.Tensor:
    """``aggregate_lm_losses`` of a micro-batch from its full (batch, tokens, vocabulary) logits, or,
    with ``head``, from its last hidden states: the head is then applied only at trained
    positions (same value and gradient, a fraction of the largest matmul of a small model).
    """
    positions, targets, rows = target_positions(input_ids, loss_mask)
    selected = outputs[:, :-1][positions]
    logits = head(selected) if head is not None else selected
    losses = F.cross_entropy(logits.float(), targets, reduction="none")
    return aggregate_lm_losses(losses, rows, input_ids.shape[0], aggregation)


def lm_loss_units(loss_mask: torch.Tensor, aggregation: str) -> int:
    """How many units a micro-batch adds to the denominator of ``aggregation``."""
    trained = loss_mask[:, 1:].sum(1)
    if aggregation == "token":
        return int(trained.sum())
    if aggregation == "sample":
        return int((trained > 0).sum())
    return int(trained.sum() > 0)
