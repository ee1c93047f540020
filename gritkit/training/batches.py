"""What one optimiser step trains on: the data files checked, and each step's share of every batch.

The data position of a run is its step number (samplers are pure functions of seed and step,
``data.StepSampler``), so a resumed run, or one with another number of processes, draws the same
global batches, each process taking its slice.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ..parallel.distributed import Processes
from .config import TrainConfig
from .data import (StepSampler, embedding_group, local_slice, read_embedding_file, read_generative_file,
                   tokenize_embedding_texts)
from .doc_cache import read_doc_cache_file

DATA_INDEX = "data_index"  # under output_dir: the line offsets of every data file, for resuming


def load_data(config: TrainConfig, index_dir: Path | None = None) -> tuple[list, list, list]:
    """Check every data file the mode needs: embedding datasets, and (file, examples) pairs of
    generative and of doc-cache data, each read from its file on access
    (``data.read_embedding_file``). Indexes saved in ``index_dir`` spare the pass over files that
    have not changed since."""
    embedding, generative = [], []
    if config.mode != "generative":
        embedding = [read_embedding_file(p, config.train_group_size - 1, index_dir) for p in config.embedding_data]
    if config.mode != "embedding":
        generative = [(p, read_generative_file(p, index_dir)) for p in config.generative_data]
    doc_cache = [(p, read_doc_cache_file(p, index_dir)) for p in config.doc_cache_data]
    return embedding, generative, doc_cache


def embedding_items(grit, config: TrainConfig, sampler: StepSampler, embedding: list, batch_index: int,
                    processes: Processes) -> tuple[list, list]:
    """This process's tokenised queries and documents of contrastive batch ``batch_index``.

    Each query brings its group (positive, then hard negatives), drawn with a random state of
    its own so that a resumed run, or another number of processes, draws the same documents.
    """
    dataset, indices = sampler.batch(batch_index)
    queries, documents = [], []
    for index in local_slice(indices, processes.rank, processes.world_size):
        example = embedding[dataset][index]
        queries.append(example.query)
        documents += embedding_group(example, config.train_group_size,
                                     random.Random(f"{config.seed}:{batch_index}:{dataset}:{index}"))
    return (tokenize_embedding_texts(grit, queries, config.query_max_length),
            tokenize_embedding_texts(grit, documents, config.passage_max_length))


@dataclass
class StepBatch:
    """This process's share of one step's batches, tokenised; None where a side does not train then."""

    queries: list | None = None
    documents: list | None = None
    chats: list | None = None
    doc_cache: list | None = None  # samples that read a document's doc cache
    doc_prefixes: list | None = None  # each doc_cache sample's documents, its opening packing.Blocks

    @property
    def tokens(self) -> int:
        return sum(len(ids) for side in (self.queries, self.documents, self.chats, self.doc_cache) if side
                   for ids, _ in side)


class StepDraw:
    """Each step's batches: which sides train at a step, and this process's slice of each.

    ``embedding`` are the checked embedding datasets, ``generative`` and ``doc_cache`` the tokenised
    chats and doc-cache samples (or None). Each stream has its own sampler and seed.
    """

    def __init__(self, config: TrainConfig, grit, embedding: list, generative, doc_cache, processes: Processes):
        self.config, self.grit, self.processes = config, grit, processes
        self.embedding, self.generative, self.doc_cache = embedding, generative, doc_cache
        self.embedding_sampler = self.chat_sampler = self.doc_sampler = None
        if embedding:
            self.embedding_sampler = StepSampler([len(d) for d in embedding], config.embedding_batch_size,
                                                 config.seed, config.embedding_data)
        if generative:
            self.chat_sampler = StepSampler([len(generative.items)], config.generative_batch_size, config.seed + 1,
                                            ["generative_data (examples kept after fitting to length)"])
        if doc_cache:
            self.doc_sampler = StepSampler([len(doc_cache.items)], config.doc_cache_batch_size, config.seed + 2,
                                           ["doc_cache_data (samples kept after fitting to length)"])

    def default_steps(self) -> int:
        """One pass over the smaller of the embedding and chat streams: each is drawn without
        repetition until exhausted (the embedding stream lasts ``embedding_every`` x longer)."""
        every = self.config.embedding_every
        return min(s.steps_per_epoch * (every if s is self.embedding_sampler else 1)
                   for s in (self.embedding_sampler, self.chat_sampler) if s)

    def __call__(self, step: int) -> StepBatch:
        config, processes, batch = self.config, self.processes, StepBatch()
        # With embedding_every N the contrastive batch comes on every N-th step only: the LM side
        # gets N times the optimiser steps for the same compute (the embedding pass costs most).
        if self.embedding_sampler is not None and config.lambda_rep and step % config.embedding_every == 0:
            batch.queries, batch.documents = embedding_items(self.grit, config, self.embedding_sampler, self.embedding,
                                                             step // config.embedding_every, processes)
        if self.chat_sampler is not None and config.lambda_gen:
            _, indices = self.chat_sampler.batch(step)
            batch.chats = [self.generative.items[i] for i in local_slice(indices, processes.rank, processes.world_size)]
        if self.doc_sampler is not None and config.lambda_doc_cache:
            _, indices = self.doc_sampler.batch(step)
            mine = local_slice(indices, processes.rank, processes.world_size)
            batch.doc_cache = [self.doc_cache.items[i] for i in mine]
            batch.doc_prefixes = [self.doc_cache.prefixes[i] for i in mine]
        return batch
