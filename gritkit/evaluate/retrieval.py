"""Retrieval: rank a corpus for each query by cosine similarity (or BM25) and score the ranking.

Metrics come from ``pytrec_eval`` (the Python binding of NIST's trec_eval): nDCG@10
(``ndcg_cut_10``), MRR@10 (``recip_rank`` over the top 10) and Recall@100 (``recall_100``),
averaged over queries. BM25 is ``bm25s`` over the same texts, English stopwords removed.
"""

from __future__ import annotations

import logging

import numpy as np

TOP_K = 100


def scores_from_run(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Mean nDCG@10, MRR@10 and Recall@100 of ``run`` ({qid: {docid: score}}) against ``qrels``.

    A query missing from ``run`` scores 0 on every metric (trec_eval would skip it silently).
    """
    import pytrec_eval

    run = {q: run.get(q, {}) for q in qrels}
    top10 = {q: dict(sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:10]) for q, docs in run.items()}
    full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    mrr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    count = len(qrels)
    return {
        "ndcg@10": sum(full.get(q, {}).get("ndcg_cut_10", 0.0) for q in qrels) / count,
        "mrr@10": sum(mrr.get(q, {}).get("recip_rank", 0.0) for q in qrels) / count,
        "recall@100": sum(full.get(q, {}).get("recall_100", 0.0) for q in qrels) / count,
    }


def dense_run(query_vectors: np.ndarray, doc_vectors: np.ndarray, query_ids: list[str], doc_ids: list[str],
              k: int = TOP_K) -> dict[str, dict[str, float]]:
    """Top-``k`` documents per query by dot product (cosine for unit vectors)."""
    scores = query_vectors @ doc_vectors.T
    k = min(k, len(doc_ids))
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return {qid: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, qid in enumerate(query_ids)}


def bm25_run(queries: dict[str, str], corpus: dict[str, str], k: int = TOP_K) -> dict[str, dict[str, float]]:
    """Top-``k`` documents per query by BM25 (bm25s defaults: Lucene variant, k1=1.5, b=0.75)."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s puts its own logger at DEBUG

    doc_ids = list(corpus)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([corpus[d] for d in doc_ids], stopwords="en", show_progress=False), show_progress=False)
    query_ids = list(queries)
    tokens = bm25s.tokenize([queries[q] for q in query_ids], stopwords="en", show_progress=False)
    documents, scores = retriever.retrieve(tokens, k=min(k, len(doc_ids)), show_progress=False)
    # BM25 gives 0 to documents sharing no term with the query: they are not retrieved.
    return {qid: {doc_ids[j]: float(s) for j, s in zip(documents[i], scores[i]) if s > 0} for i, qid in enumerate(query_ids)}


def evaluate_retrieval(task: dict, embedder) -> dict[str, float]:
    """Scores of ``embedder`` (an object with encode_queries/encode_documents) on a retrieval task."""
    query_ids, doc_ids = list(task["queries"]), list(task["corpus"])
    query_vectors = embedder.encode_queries([task["queries"][q] for q in query_ids], task["instruction"])
    doc_vectors = embedder.encode_documents([task["corpus"][d] for d in doc_ids])
    return scores_from_run(dense_run(query_vectors, doc_vectors, query_ids, doc_ids), task["qrels"])


def evaluate_bm25(task: dict) -> dict[str, float]:
    return scores_from_run(bm25_run(task["queries"], task["corpus"]), task["qrels"])
