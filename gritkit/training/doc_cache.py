"""Training a GRIT model to read documents' doc caches, the cached RAG mode of the paper's table.

Doc caching (``rag/modes.py``) answers from the keys/values of each document's *embedding* pass
(bidirectional, in GRIT's embedding format), concatenated at their true positions when several are
retrieved (``rag/kv.concatenate_segments``), followed by a causal chat turn. A model trained on
plain chats only has never read keys/values made bidirectionally, and a small one reads them
badly. This objective trains that reading: a sample is 1 to ``MAX_DOCUMENTS`` documents in the
embedding format, then the chat turn that follows a cache (``GritFormat.continuation``), with the
next-token loss on the answer. One packed pass computes it as inference does: each document is a
block of its sample that attends to itself only (``packing.Blocks``), at the positions after the
documents before it, so its keys/values are those of its own embedding pass moved there; the chat
turn attends causally to all of them and to itself.

Self-retrieval reads caches mid-answer instead (``rag/self_retrieval.py``): the chat prompt, the
start of the answer through the retrieval marker, the template's end of turn, the documents'
caches at the positions after all that, the template's next turn opening, then the rest of the
answer. The same packed pass trains it, with the blocks starting after the prompt; the loss is on
the answer's start (the decision to retrieve) and on its rest.

Lines: ``{"document": "...", "messages": [{"role": "user", ...}, {"role": "assistant", ...}]}``, or
``"documents": ["...", ...]`` (1 to ``MAX_DOCUMENTS``, in cache order) instead of ``"document"``:
one user turn (what follows the cache: for doc caching, the question then ``DOC_FIRST_TASK``) and
its answer. Messages ``[user, assistant, assistant]`` are the mid-answer form: the documents are
spliced between the two assistant turns (the first ends with the retrieval marker). Documents longer than ``doc_cache_max_length`` tokens are cut at the end, each on its
own, as the index cuts them; chat turns longer than ``generative_max_length`` lose the end of the
answer, and a sample that would keep less than half of its answer is dropped. Both are counted per
file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..model.formats import turn_strings
from ..model.packing import Blocks
from .data import DataError, json_object
from .jsonl_index import IndexedJsonl

DOC_CACHE_CHECKS = "doc cache lines v2"
# Most documents one sample reads: a cached rag answer reading more (--top-k) goes beyond training.
MAX_DOCUMENTS = 4


@dataclass(frozen=True)
class DocCacheExample:
    documents: tuple[str, ...]  # in cache order
    user: str
    answer: str
    opening: str | None = None  # mid-answer form: the answer's start, through the retrieval marker


def _documents(record: dict, where: str) -> tuple[str, ...]:
    """The line's documents: ``"document"`` (one) or ``"documents"`` (a list), checked."""
    keys = set(record) - {"messages"}
    if keys not in ({"document"}, {"documents"}) or "messages" not in record:
        raise DataError(f"{where}: a doc cache line has exactly the keys \"document\" (or \"documents\") and "
                        f"\"messages\"; got {sorted(record)}")
    if "document" in record:
        if not isinstance(record["document"], str) or not record["document"].strip():
            raise DataError(f"{where}: document must be a non-empty string")
        return (record["document"],)
    documents = record["documents"]
    if (not isinstance(documents, list) or not 1 <= len(documents) <= MAX_DOCUMENTS
            or not all(isinstance(d, str) and d.strip() for d in documents)):
        raise DataError(f"{where}: documents must be a list of 1 to {MAX_DOCUMENTS} non-empty strings")
    return tuple(documents)


def doc_cache_example(record, where: str) -> DocCacheExample:
    """One decoded doc-cache line, checked; errors start with ``where`` (``file:line``)."""
    record = json_object(record, where)
    documents = _documents(record, where)
    messages = record["messages"]
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages] if isinstance(messages, list) else None
    if roles not in (["user", "assistant"], ["user", "assistant", "assistant"]):
        raise DataError(f"{where}: messages must be one user turn then one assistant turn (the chat that reads "
                        f"the cache), or user, assistant, assistant (the cache spliced mid-answer), got roles {roles}")
    for i, message in enumerate(messages):
        if set(message) != {"role", "content"} or not isinstance(message["content"], str):
            raise DataError(f"{where}: messages[{i}] must be an object with exactly role and content (a string)")
    if not all(m["content"].strip() for m in messages[1:]):
        raise DataError(f"{where}: an assistant turn is empty, so nothing to train on")
    opening = messages[1]["content"] if len(messages) == 3 else None
    return DocCacheExample(documents, messages[0]["content"], messages[-1]["content"], opening)


def read_doc_cache_file(path: str | Path, index_dir: str | Path | None = None) -> IndexedJsonl:
    """Check one doc-cache dataset; its examples are read from the file on access."""
    return IndexedJsonl(path, doc_cache_example, DOC_CACHE_CHECKS, DataError, index_dir)


@dataclass
class DocCacheItems:
    """Tokenised samples: ``items`` (ids, loss mask), ``prefixes`` (the document blocks opening
    each) and, per file, how many were read, cut or dropped (``documents_cut`` counts documents)."""

    items: list[tuple[list[int], list[bool]]] = field(default_factory=list)
    prefixes: list[Blocks] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def describe(self) -> list[str]:
        return [f"{name}: {c['kept']} of {c['examples']} doc cache samples kept; {c['documents_cut']} documents cut "
                f"to doc_cache_max_length, {c['answers_cut']} answers cut to generative_max_length, "
                f"{c['dropped']} dropped (under half of the answer left)" for name, c in self.counts.items()]


def document_tokens(grit, document: str, max_length: int) -> tuple[list[int], bool]:
    """The document's ids as the index embeds it (embedding format, no instruction), and whether
    ``max_length`` cut it."""
    ids = grit.tokenize_for_embedding([document], [""], max_length=max_length)[0][0]
    cut = len(ids) == max_length and len(grit.tokenize_for_embedding([document], [""], max_length + 1)[0][0]) > max_length
    return ids, cut


def _turn_ids(grit, example: DocCacheExample) -> tuple[list[int], list[bool], list[int]]:
    """The ids before the documents (with their loss mask) and the ids between them and the answer."""
    ids_of = lambda text: grit.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    if example.opening is None:
        return [], [], ids_of(grit.format.continuation(example.user))
    # As the self-retrieval loop feeds it: the prompt, the generated opening, the end of the turn.
    messages = [{"role": "user", "content": example.user}]
    strings = turn_strings(grit.tokenizer, messages)
    prompt, opening = grit.chat_input_ids(messages), ids_of(example.opening)
    before = prompt + opening + ids_of(strings.close)
    return before, [False] * len(prompt) + [True] * len(opening) + [False] * (len(before) - len(prompt) - len(opening)), ids_of(strings.tail)


def doc_cache_sample(grit, example: DocCacheExample, document_max_length: int, turn_max_length: int):
    """(ids, loss mask, document blocks, documents cut, answer cut) of one example, or None to drop it."""
    tokenizer = grit.tokenizer
    documents = [document_tokens(grit, document, document_max_length) for document in example.documents]
    before, before_mask, turn = _turn_ids(grit, example)
    answer = tokenizer(example.answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    room = turn_max_length - len(before) - len(turn)
    answer_cut = len(answer) > room
    if room * 2 < len(answer):
        return None
    answer = answer[:room]
    doc_ids = [token for ids, _ in documents for token in ids]
    ids = before + doc_ids + turn + answer
    mask = before_mask + [False] * (len(doc_ids) + len(turn)) + [True] * len(answer)
    # Each document is embedded alone, so it sees only itself; a model that embeds causally makes causal caches.
    blocks = Blocks(tuple(len(d) for d, _ in documents), bidirectional=grit.attention == "bidirectional",
                    start=len(before))
    return ids, mask, blocks, sum(cut for _, cut in documents), answer_cut


def tokenize_doc_cache_files(grit, files: Sequence[tuple[str, Sequence[DocCacheExample]]], document_max_length: int,
                             turn_max_length: int, progress: bool = False) -> DocCacheItems:
    """Every example of every (name, examples) file as a training sample, counted per file."""
    from tqdm.auto import tqdm

    out = DocCacheItems()
    for name, examples in files:
        counts = out.counts[name] = dict(examples=len(examples), kept=0, documents_cut=0, answers_cut=0, dropped=0)
        for example in tqdm(examples, desc=f"tokenise {Path(name).name}", disable=not progress, leave=False):
            sample = doc_cache_sample(grit, example, document_max_length, turn_max_length)
            if sample is None:
                counts["dropped"] += 1
                continue
            ids, mask, blocks, documents_cut, answer_cut = sample
            out.items.append((ids, mask))
            out.prefixes.append(blocks)
            counts["kept"] += 1
            counts["documents_cut"] += documents_cut
            counts["answers_cut"] += answer_cut
    return out
