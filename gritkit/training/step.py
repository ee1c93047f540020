"""One optimiser step's backward passes, chosen once per run from the config.

The contrastive and next-token losses run as two passes (padded or packed rows) or, with
``single_pass``, as one pass over rows that hold both; a doc-cache pass follows when the run
trains reading doc caches. The passes only accumulate gradients: the loop syncs, clips and steps.
"""

from __future__ import annotations

from functools import partial

from ..parallel.distributed import all_reduce_sum
from .batches import StepBatch
from .config import TrainConfig
from .packed_backward import generative_backward_packed, single_pass_backward
from .backward import StepSettings, embedding_backward, generative_backward


class GritStep:
    """``backward(batch)`` accumulates one step's gradients and returns its losses."""

    def __init__(self, grit, config: TrainConfig, settings: StepSettings, sharded_layers=()):
        self.grit, self.settings, self.layers = grit, settings, list(sharded_layers)
        self.lambda_rep, self.lambda_gen, self.lambda_doc_cache = config.lambda_rep, config.lambda_gen, config.lambda_doc_cache
        self.single_pass_length = config.packed_row_length("both") if config.single_pass else 0
        self.embedding_pack_length = config.packed_row_length("embedding")
        self.chat_backward = generative_backward
        if config.packing:
            self.chat_backward = partial(generative_backward_packed, capacity=config.packed_row_length("generative"))
        self.doc_cache_length = config.doc_cache_max_length + config.generative_max_length
        self.reads_doc_caches = bool(config.doc_cache_data)

    def sync(self, last: bool) -> None:
        """FSDP reduce-scatters gradients on the step's last backward pass only."""
        for layer in self.layers:
            layer.set_requires_gradient_sync(last)

    def backward(self, batch: StepBatch) -> dict:
        """Losses of the step (contrastive averaged over processes, LM global); None for a side that did not run."""
        grit, settings, processes = self.grit, self.settings, self.settings.processes
        # the doc-cache pass comes last when it runs, so it is the one that syncs
        sync = (lambda last: self.sync(last and batch.doc_cache is None))
        loss_rep = loss_gen = loss_doc = None
        if self.single_pass_length and batch.queries is not None and batch.chats is not None:
            loss_rep, loss_gen = single_pass_backward(
                grit, batch.queries, batch.documents, batch.chats, settings, capacity=self.single_pass_length,
                lambda_rep=self.lambda_rep, lambda_gen=self.lambda_gen, before_backward=sync)
        else:
            if batch.queries is not None:
                loss_rep = embedding_backward(grit, batch.queries, batch.documents, settings, weight=self.lambda_rep,
                                              pack_length=self.embedding_pack_length, before_backward=sync,
                                              last=batch.chats is None)
            if batch.chats is not None:
                loss_gen = self.chat_backward(grit.model, batch.chats, settings, weight=self.lambda_gen,
                                              before_backward=sync)
        if loss_rep is not None:
            loss_rep = all_reduce_sum(loss_rep, processes) / processes.world_size
        if batch.doc_cache is not None:
            # A sample of several documents can be longer than one document and its turn: its row grows.
            capacity = max(self.doc_cache_length, max(len(ids) for ids, _ in batch.doc_cache))
            loss_doc = generative_backward_packed(grit.model, batch.doc_cache, settings, capacity=capacity,
                                                  weight=self.lambda_doc_cache, prefixes=batch.doc_prefixes,
                                                  before_backward=self.sync)
        return {"loss_rep": loss_rep, "loss_gen": loss_gen,
                **({"loss_doc_cache": loss_doc} if self.reads_doc_caches else {})}
