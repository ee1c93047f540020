"""Training data: JSONL readers with validation, step-indexed samplers and collators.

Embedding lines: ``{"query": T, "pos": [T, ...], "neg": [T, ...]}`` where each ``T`` is a text or
an ``[instruction, text]`` pair. Generative lines: ``{"messages": [{"role": "user"|"assistant",
"content": "..."}, ...]}`` (loss on assistant tokens) or ``{"text": "..."}`` (loss on all tokens).
Every file is read through and checked before training starts; the first bad line stops the run
with ``file:line: what is wrong``. Only the byte offset of each line is kept: an example is parsed
from the file when a batch needs it (``jsonl_index.IndexedJsonl``), and tokenised chats are kept
at 5 bytes a token in a temporary file (``token_store.TokenStore``), so that datasets of millions
of examples train without being held as Python objects.

Samplers are pure functions of (seed, step): the data position of a run is its step number, so
resuming needs no sampler state, and the global batch of a step is the same whatever the number
of processes (each process takes its slice).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import torch

from ..model.formats import FIT_STATUSES, fit_to_length, instruction_length
from .jsonl_index import IndexedJsonl
from ..model.gritlm import right_pad
from .token_store import TokenStore

Text = tuple[str, str]  # (instruction, text); instruction "" means none


class DataError(ValueError):
    """A training file is malformed; the message starts with ``file:line:``."""


@dataclass(frozen=True)
class EmbeddingExample:
    query: Text
    pos: tuple[Text, ...]
    neg: tuple[Text, ...]


@dataclass(frozen=True)
class GenerativeExample:
    messages: tuple[dict, ...] | None = None  # a chat; loss on the assistant turns
    text: str | None = None  # plain text; loss on every token


def _text(value, where: str) -> Text:
    if isinstance(value, str):
        if not value:
            raise DataError(f"{where} is an empty text")
        return ("", value)
    if (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        if not value[1]:
            raise DataError(f"{where} is an empty text")
        return (value[0], value[1])
    raise DataError(f"{where} must be a text or an [instruction, text] pair of strings, got {json.dumps(value)[:80]}")


def json_object(record, where: str) -> dict:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return record


def embedding_example(record, where: str, negatives_needed: int = 0) -> EmbeddingExample:
    """One decoded embedding line, checked; ``where`` (``file:line``) starts every error."""
    record = json_object(record, where)
    unknown = set(record) - {"query", "pos", "neg"}
    if unknown:
        raise DataError(f"{where}: unknown key {sorted(unknown)[0]!r} (expected query, pos, neg)")
    if "query" not in record or "pos" not in record:
        raise DataError(f"{where}: an embedding line needs \"query\" and \"pos\"")
    query = _text(record["query"], f"{where}: query")
    lists = {}
    for key in ("pos", "neg"):
        value = record.get(key, [])
        if not isinstance(value, list):
            raise DataError(f"{where}: {key} must be a list of texts")
        lists[key] = tuple(_text(v, f"{where}: {key}[{i}]") for i, v in enumerate(value))
    if not lists["pos"]:
        raise DataError(f"{where}: pos is empty; each query needs at least one positive")
    if negatives_needed and not lists["neg"]:
        raise DataError(f"{where}: no \"neg\" texts, but train_group_size={negatives_needed + 1} "
                        f"needs {negatives_needed} hard negative(s) per query")
    return EmbeddingExample(query, lists["pos"], lists["neg"])


def generative_example(record, where: str) -> GenerativeExample:
    """One decoded generative line (a chat or a plain text), checked; errors start with ``where``."""
    record = json_object(record, where)
    if set(record) == {"text"}:
        if not isinstance(record["text"], str) or not record["text"]:
            raise DataError(f"{where}: text must be a non-empty string")
        return GenerativeExample(text=record["text"])
    if set(record) != {"messages"}:
        raise DataError(f"{where}: a generative line has exactly one key, \"messages\" or \"text\"; got {sorted(record)}")
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: messages must be a non-empty list")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise DataError(f"{where}: messages[{i}] must be an object with exactly role and content")
        if message["role"] not in ("user", "assistant"):
            raise DataError(f"{where}: messages[{i}].role is {message['role']!r}; GRIT chats have user and assistant only")
        if not isinstance(message["content"], str):
            raise DataError(f"{where}: messages[{i}].content must be a string")
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: no assistant message, so nothing to train on")
    return GenerativeExample(messages=tuple(messages))


# What a saved index of a file vouches for; change a version when its checks change.
EMBEDDING_CHECKS, GENERATIVE_CHECKS = "embedding lines v1", "generative lines v1"


def read_embedding_file(path: str | Path, negatives_needed: int = 0, index_dir: str | Path | None = None
                        ) -> IndexedJsonl:
    """Check one embedding dataset and return its examples, read from the file on access.

    Each query needs ``negatives_needed`` >= 1 negatives available when > 0 (fewer are drawn with
    repetition). An index of the file saved in ``index_dir`` (``IndexedJsonl.save_index``) is
    used instead of reading the file through, while the file is unchanged.
    """
    checks = f"{EMBEDDING_CHECKS}, {'with' if negatives_needed else 'without'} negatives"
    return IndexedJsonl(path, partial(embedding_example, negatives_needed=negatives_needed), checks, DataError,
                        index_dir)


def read_generative_file(path: str | Path, index_dir: str | Path | None = None) -> IndexedJsonl:
    """Check one generative dataset (chats or plain texts); its examples are read on access."""
    return IndexedJsonl(path, generative_example, GENERATIVE_CHECKS, DataError, index_dir)


# ---------------------------------------------------------------------------------- sampling
class StepSampler:
    """Global batches indexed by step: dataset ``d``'s examples, ``batch_size`` at a time.

    Each epoch shuffles every dataset, cuts it into full batches (one dataset per batch, so
    in-batch negatives come from the same dataset) and shuffles the order of all batches. Within
    an epoch nothing repeats; the remainder of a dataset that does not fill a batch is left for
    a later epoch's shuffle.
    """

    def __init__(self, sizes: Sequence[int], batch_size: int, seed: int, names: Sequence[str] = ()):
        for index, size in enumerate(sizes):
            if size < batch_size:
                name = names[index] if index < len(names) else f"dataset {index}"
                raise DataError(f"{name}: {size} examples, fewer than the batch size {batch_size}")
        self.sizes, self.batch_size, self.seed = list(sizes), batch_size, seed
        self.steps_per_epoch = sum(size // batch_size for size in sizes)
        self._epoch, self._batches = -1, []

    def batch(self, step: int) -> tuple[int, list[int]]:
        """(dataset index, example indices) of the global batch at ``step``."""
        epoch, index = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            rng = random.Random(f"{self.seed}:{epoch}")
            batches = []
            for dataset, size in enumerate(self.sizes):
                order = rng.sample(range(size), size)
                batches += [(dataset, order[i: i + self.batch_size])
                            for i in range(0, size - self.batch_size + 1, self.batch_size)]
            rng.shuffle(batches)
            self._epoch, self._batches = epoch, batches
        return self._batches[index]


def local_slice(items: list, rank: int, world_size: int) -> list:
    """This process's contiguous share of a global batch (sizes are checked to divide evenly)."""
    share = len(items) // world_size
    return items[rank * share: (rank + 1) * share]


# ---------------------------------------------------------------------------------- embedding
def embedding_group(example: EmbeddingExample, group_size: int, rng: random.Random) -> list[Text]:
    """One positive then ``group_size - 1`` hard negatives (drawn with repetition if too few)."""
    docs = [rng.choice(example.pos)]
    wanted = group_size - 1
    if wanted:
        negatives = example.neg
        docs += rng.sample(negatives, wanted) if len(negatives) >= wanted else rng.choices(negatives, k=wanted)
    return docs


def tokenize_embedding_texts(grit, texts: Sequence[Text], max_length: int):
    """Token ids and pool masks through GritLM's own formatting (one implementation of it)."""
    return grit.tokenize_for_embedding([t for _, t in texts], [i for i, _ in texts], max_length)


# ---------------------------------------------------------------------------------- generative
@dataclass
class GenerativeBatch:
    input_ids: torch.Tensor  # (batch, tokens), right-padded
    attention_mask: torch.Tensor  # (batch, tokens)
    loss_mask: torch.Tensor  # (batch, tokens), 1 on tokens that are predicted and trained on

    def to(self, device) -> "GenerativeBatch":
        return GenerativeBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.loss_mask)))


def tokenize_generative(tokenizer, example: GenerativeExample, max_length: int
                        ) -> tuple[list[int], list[bool], str]:
    """Token ids, loss mask and fit status of one example cut to ``max_length`` tokens.

    A chat is rendered once with the tokenizer's chat template; each assistant turn's character
    span is where rendering the chat up to and including that turn extends the rendering that
    ends with the generation prompt. Tokens of the full string whose characters overlap such a
    span are trained on, so token merges at turn boundaries cannot shift the mask. A chat that
    is too long loses user text after each user turn's instruction before any answer token
    (``formats.fit_to_length``; status ``kept``, ``shortened``, ``answer_cut`` or ``dropped``,
    the last with empty ids). A plain text keeps its first ``max_length`` tokens: every token of
    it is trained on, so any part of it is a whole training example.
    """
    if example.text is not None:
        ids = tokenizer(example.text, add_special_tokens=True)["input_ids"] + [tokenizer.eos_token_id]
        trained = [True] * len(ids)
        return fit_to_length(ids, trained, [False] * len(ids), max_length, min_answer_share=0.0)
    messages = list(example.messages)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    answers, prompts = [], []
    searched = 0
    for i, message in enumerate(messages):
        if message["role"] == "user":
            # The template copies the content verbatim in every format we know; if one does not,
            # the turn is simply not cuttable and the answer is cut instead (and counted).
            at = full.find(message["content"], searched)
            if at >= 0:
                prompts.append((at + instruction_length(message["content"]), at + len(message["content"])))
                searched = at + len(message["content"])
            continue
        before = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        through = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not (full.startswith(before) and full.startswith(through)):
            raise ValueError("the tokenizer's chat template does not render a chat as an extension of its "
                             "beginning, so assistant tokens cannot be located")
        answers.append((len(before), len(through)))
        searched = max(searched, len(through))
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    offsets = encoded["offset_mapping"]
    trained = [_overlaps(s, e, answers) for s, e in offsets]
    # A prompt token may go only if it lies wholly inside cuttable user text.
    cuttable = [any(a <= s and e <= b for a, b in prompts) and e > s for s, e in offsets]
    return fit_to_length(encoded["input_ids"], trained, cuttable, max_length)


def _overlaps(start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    return any(start < span_end and end > span_start for span_start, span_end in spans)


@dataclass
class GenerativeSet:
    """Tokenised generative examples of several files, and what fitting them to length did."""

    items: Sequence[tuple[list[int], list[bool]]]  # (ids, mask) of every example that was not dropped
    counts: dict[str, dict[str, int]]  # file -> {"examples", "kept", "shortened", "answer_cut", "dropped"}

    def describe(self, max_length: int) -> list[str]:
        """One line per file: how many examples were shortened, had their answer cut, or were dropped."""
        return [f"{name}: {c['examples']} examples at {max_length} tokens: {c['shortened']} prompts shortened, "
                f"{c['answer_cut']} answers cut, {c['dropped']} dropped" for name, c in self.counts.items()]


def tokenize_generative_files(tokenizer, files: Sequence[tuple[str, Sequence[GenerativeExample]]], max_length: int,
                              progress: bool = False) -> GenerativeSet:
    """Tokenise every example of ``files`` ((name, examples) pairs) once, counting each fit status.

    The items are kept in a ``TokenStore`` (5 bytes a token, on a temporary file), not as lists.
    """
    from tqdm.auto import tqdm

    items, counts = TokenStore(), {}
    total = sum(len(examples) for _, examples in files)
    with tqdm(total=total, desc="tokenize chats", unit="example", disable=not progress or total < 1000) as bar:
        for name, examples in files:
            count = {"examples": len(examples), **{status: 0 for status in FIT_STATUSES}}
            for example in examples:
                ids, mask, status = tokenize_generative(tokenizer, example, max_length)
                count[status] += 1
                if status != "dropped":
                    items.append(ids, mask)
                bar.update(1)
            counts[name] = count
    return GenerativeSet(items, counts)


def collate_generative(items: Sequence[tuple[list[int], list[bool]]], pad_id: int) -> GenerativeBatch:
    """Right-pad (ids, mask) items into one batch."""
    return GenerativeBatch(*right_pad(items, pad_id))
