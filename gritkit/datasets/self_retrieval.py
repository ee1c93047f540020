"""Training and evaluation data for a model that decides itself when to retrieve.

    gritkit data self-retrieval --data runs/data --out runs/data/self_retrieval

Built from the output of ``gritkit data build``, so its held-out split is inherited: training
items come from the training files, evaluation items from the held-out tasks only.

Two kinds of request, labelled by construction:

- **needs a document**: the answer is a fact of one document of the project's corpora that the
  request does not contain: an FAQ question (Python/Perl FAQs), or "Tell me about the Debian package
  described as ..." (its full description). The training chat is
  ``[user: request, assistant: RETRIEVAL_MARKER, user: document, assistant: answer]``: the model
  learns to emit the marker first, and to answer from the document placed after it (the answer is
  the document's lead: its first sentences, at most ``ANSWER_CHARS`` characters).
- **answerable without one**: the request carries all it needs, or asks for general knowledge: define
  an English word or name the word a definition defines (WordNet), summarise a package description
  given in the request, write a function from its docstring. The chat is the plain one.

``doc_cache.jsonl`` holds the needs-document requests again in the mid-answer doc cache form
(``training/doc_cache.py``): the marker, then the document's cache spliced where the loop splices
it, then the answer; so a model learns to read the caches it retrieves itself.

``contrastive.jsonl`` pairs every needs-document request (under ``SELF_RETRIEVAL_INSTRUCTION``) with its
document, so the request embedding that searches the index is trained by the contrastive loss.

Files: ``chats.jsonl`` (generative), ``doc_cache.jsonl`` (doc_cache_data), ``contrastive.jsonl``
(embedding) and ``eval.json``: the corpus
to index (held-out FAQ answers and Debian descriptions) and held-out questions, each with
``needs_document``, the relevant document's id (or null) and a reference answer.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from ..model.formats import RETRIEVAL_MARKER
from .common import read_json, read_jsonl, stable_fraction, write_json, write_jsonl

SELF_RETRIEVAL_INSTRUCTION = "Given a user's request, retrieve a document that helps answer it"
DEBIAN_REQUEST = "Tell me about the Debian package described as \"{summary}\"."
ANSWER_CHARS = 240
SEED = 20261203
# Training chats per kind (all of the smaller sources).
TRAIN_SIZES = {"faq": 10_000, "debian": 1_200, "wordnet": 900, "debian-summary": 450, "stdlib": 150}
# Held-out questions per kind in eval.json, and Debian descriptions indexed beside the asked ones.
EVAL_SIZES = {"faq": 60, "debian": 60, "wordnet": 60, "debian-summary": 60}
DEBIAN_DISTRACTORS = 240


def lead(text: str, max_chars: int = ANSWER_CHARS) -> str:
    """The first sentences of ``text`` that fit in ``max_chars`` (the first one cut at a word if longer)."""
    flat = " ".join(text.split())
    sentences = re.split(r"(?<=[.!?])\s+", flat)
    out = ""
    for sentence in sentences:
        candidate = f"{out} {sentence}".strip()
        if len(candidate) > max_chars:
            break
        out = candidate
    if not out:
        out = flat[:max_chars].rsplit(" ", 1)[0] if len(flat) > max_chars else flat
    return out


def retrieval_chat(request: str, document: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": request}, {"role": "assistant", "content": RETRIEVAL_MARKER},
                         {"role": "user", "content": document}, {"role": "assistant", "content": answer}]}


def cached_retrieval_line(request: str, document: str, answer: str) -> dict:
    """The same request with the document read as its doc cache, spliced after the marker."""
    return {"document": document, "messages": [{"role": "user", "content": request},
                                               {"role": "assistant", "content": RETRIEVAL_MARKER},
                                               {"role": "assistant", "content": answer}]}


def plain_chat(request: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": request}, {"role": "assistant", "content": answer}]}


def _sample(items: list, size: int, rng: random.Random) -> list:
    return items if len(items) <= size else rng.sample(items, size)


def _first_turns(path: Path, prefix: str) -> list[tuple[str, str]]:
    """(user, assistant) of the chats of a generative file whose user turn starts with ``prefix``."""
    pairs = []
    for record in read_jsonl(path, ["messages"]):
        messages = record["messages"]
        if len(messages) == 2 and messages[0]["content"].startswith(prefix):
            pairs.append((messages[0]["content"], messages[1]["content"]))
    return pairs


def training_sets(data_dir: Path, rng: random.Random) -> tuple[list[dict], list[dict], list[dict], dict]:
    """The chats, the mid-answer doc cache lines, the contrastive pairs and the count of chats per kind."""
    faq = [(r["query"][1], r["pos"][0]) for r in read_jsonl(data_dir / "contrastive/faq_question_answer.jsonl")]
    debian = [(DEBIAN_REQUEST.format(summary=r["query"][1]), r["pos"][0])
              for r in read_jsonl(data_dir / "contrastive/debian_short_long.jsonl")]
    needs = {"faq": _sample(faq, TRAIN_SIZES["faq"], rng), "debian": _sample(debian, TRAIN_SIZES["debian"], rng)}
    wordnet = _first_turns(data_dir / "generative/wordnet.jsonl", "")
    plain = {"wordnet": _sample(wordnet, TRAIN_SIZES["wordnet"], rng),
             "debian-summary": _sample(_first_turns(data_dir / "generative/debian.jsonl", "Summarise"),
                                       TRAIN_SIZES["debian-summary"], rng),
             "stdlib": _sample(_first_turns(data_dir / "generative/stdlib.jsonl", ""), TRAIN_SIZES["stdlib"], rng)}
    chats = [retrieval_chat(q, d, lead(d)) for pairs in needs.values() for q, d in pairs]
    cached = [cached_retrieval_line(q, d, lead(d)) for pairs in needs.values() for q, d in pairs]
    chats += [plain_chat(q, a) for pairs in plain.values() for q, a in pairs]
    rng.shuffle(chats)
    contrastive = []
    for pairs in needs.values():
        documents = [d for _, d in pairs]
        for q, d in pairs:
            negative = rng.choice(documents)
            while negative == d and len(documents) > 1:
                negative = rng.choice(documents)
            contrastive.append({"query": [SELF_RETRIEVAL_INSTRUCTION, q], "pos": [d], "neg": [negative]})
    rng.shuffle(contrastive)
    counts = {kind: len(pairs) for kind, pairs in {**needs, **plain}.items()}
    return chats, cached, contrastive, counts


def _by_hash(ids, size: int, salt: str) -> list:
    return sorted(ids, key=lambda i: stable_fraction(f"{salt}:{i}"))[:size]


def evaluation_set(data_dir: Path) -> dict:
    """Held-out questions of each kind and the corpus the index holds."""
    eval_dir = data_dir / "eval"
    faq, debian = read_json(eval_dir / "faq-qa.json"), read_json(eval_dir / "debian-search.json")
    wordnet, summary = read_json(eval_dir / "wordnet-reverse-dictionary.json"), read_json(eval_dir / "debian-summary.json")
    corpus = {f"faq/{i}": text for i, text in faq["corpus"].items()}
    questions = []
    for qid in _by_hash(faq["queries"], EVAL_SIZES["faq"], "faq"):
        doc = next(iter(faq["qrels"][qid]))
        questions.append({"id": f"faq/{qid}", "kind": "faq", "question": faq["queries"][qid], "needs_document": True,
                          "document": f"faq/{doc}", "reference": faq["corpus"][doc]})
    asked = _by_hash(debian["queries"], EVAL_SIZES["debian"], "debian")
    extra = [i for i in _by_hash(debian["corpus"], DEBIAN_DISTRACTORS + len(asked), "debian-corpus") if i not in asked]
    for doc in asked + extra[:DEBIAN_DISTRACTORS]:
        corpus[f"debian/{doc}"] = debian["corpus"][doc]
    for qid in asked:
        doc = next(iter(debian["qrels"][qid]))
        questions.append({"id": f"debian/{qid}", "kind": "debian", "needs_document": True, "document": f"debian/{doc}",
                          "question": DEBIAN_REQUEST.format(summary=debian["queries"][qid]),
                          "reference": lead(debian["corpus"][doc])})
    for qid in _by_hash(wordnet["queries"], EVAL_SIZES["wordnet"], "wordnet"):
        # The reverse direction: a held-out gloss is unique to its synset, a word is not (a training
        # synset may share it).
        questions.append({"id": f"wordnet/{qid}", "kind": "wordnet", "needs_document": False, "document": None,
                          "question": f"What word means: {wordnet['queries'][qid]}?",
                          "reference": next(iter(wordnet["qrels"][qid]))})
    items = {item["id"]: item for item in summary["items"]}
    for qid in _by_hash(items, EVAL_SIZES["debian-summary"], "debian-summary"):
        questions.append({"id": f"debian-summary/{qid}", "kind": "debian-summary", "needs_document": False,
                          "document": None, "question": items[qid]["prompt"], "reference": items[qid]["reference"]})
    return {"instruction": SELF_RETRIEVAL_INSTRUCTION, "marker": RETRIEVAL_MARKER,
            "corpus": corpus, "questions": questions}


def build_self_retrieval(data_dir: str | Path, out_dir: str | Path) -> dict:
    """Write chats.jsonl, contrastive.jsonl and eval.json to ``out_dir``; returns what was written."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not (data_dir / "MANIFEST.json").is_file():
        raise FileNotFoundError(f"{data_dir} is not the output of `gritkit data build` (no MANIFEST.json)")
    rng = random.Random(SEED)
    chats, cached, contrastive, counts = training_sets(data_dir, rng)
    evaluation = evaluation_set(data_dir)
    write_jsonl(out_dir / "chats.jsonl", chats)
    write_jsonl(out_dir / "doc_cache.jsonl", cached)
    write_jsonl(out_dir / "contrastive.jsonl", contrastive)
    write_json(out_dir / "eval.json", evaluation)
    needs = sum(1 for q in evaluation["questions"] if q["needs_document"])
    return {"chats": counts, "doc_cache": len(cached), "contrastive": len(contrastive), "eval_corpus": len(evaluation["corpus"]),
            "eval_questions": {"needs_document": needs, "without": len(evaluation["questions"]) - needs}}
