"""Nearest-neighbour search backends against exact search: queries/s and recall@10 (one run).

    python benchmarks/search.py [--sizes 10000,100000,1000000] [--dim 576] [--queries 1000] [--json]
    python benchmarks/search.py --smoke --json     # 2,000 vectors of width 32, 50 queries

For each index size the same vectors are searched by:

- gritkit's ``exact`` backend (the baseline: recall 1 by definition), and FAISS's own exact
  ``IndexFlatIP`` for reference;
- FAISS ``ivf`` (gritkit's approximate default) at several ``nprobe``;
- FAISS ``hnsw`` at several ``ef_search``;
- usearch's HNSW graph (float32, same degree) at several expansions, as the alternative library;
  skipped, with a note, when usearch is not installed.

Reported per row: build seconds, queries/s with all queries in one call (a batch, as in an
evaluation), queries/s one query per call (as ``gritkit rag ask`` and the server search), and
recall@10 against exact search. Vectors are synthetic: Gaussian with a power-law spectrum
(dimension i has standard deviation i^-1/2), normalised; queries are independent draws from the
same distribution. Such vectors have no clusters to exploit, so recall at a given speed is lower
than on real embeddings: a conservative case. Width 576 is SmolLM2-135M's (gritkit-smol).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import note, parse_args  # noqa: E402

SINGLE_QUERIES = 200  # one-at-a-time calls timed per row


def synthetic(count: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    scale = (np.arange(1, dim + 1) ** -0.5).astype(np.float32)
    out = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, 100_000):  # in blocks: float64 draws of 1M x 576 would be 4.6 GB
        block = rng.standard_normal((min(100_000, count - start), dim), dtype=np.float32) * scale
        out[start: start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def recall_at_10(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)]))


def timed_queries(search, queries: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(ids of every query, batched queries/s, single-query queries/s)."""
    start = time.perf_counter()
    ids = np.asarray(search(queries))
    batched = len(queries) / (time.perf_counter() - start)
    start = time.perf_counter()
    for query in queries[:SINGLE_QUERIES]:
        search(query[None])
    single = min(SINGLE_QUERIES, len(queries)) / (time.perf_counter() - start)
    return ids, batched, single


def gritkit_rows(vectors: np.ndarray, queries: np.ndarray, exact_ids, knobs: dict):
    from gritkit.rag.search import build_search

    for backend, (knob, values) in knobs.items():
        start = time.perf_counter()
        search = build_search(backend, vectors)
        build = time.perf_counter() - start
        for value in values:
            search.tune(**{knob: value})
            ids, batched, single = timed_queries(lambda q: search.search(q, 10)[1].numpy(), queries)
            yield {"method": f"faiss {backend}", "knob": f"{knob}={value}", "build_s": build,
                   "batched_qps": batched, "single_qps": single, "recall@10": recall_at_10(ids, exact_ids)}


def usearch_rows(vectors: np.ndarray, queries: np.ndarray, exact_ids, expansions):
    try:
        from usearch.index import Index
    except ImportError:
        note("usearch is not installed: its rows are skipped (pip install usearch)")
        return
    from gritkit.rag.search import DEFAULT_HNSW_M

    start = time.perf_counter()
    index = Index(ndim=vectors.shape[1], metric="ip", dtype="f32", connectivity=DEFAULT_HNSW_M, expansion_add=80)
    index.add(np.arange(len(vectors)), vectors, threads=2)
    build = time.perf_counter() - start
    for expansion in expansions:
        index.expansion_search = expansion
        ids, batched, single = timed_queries(lambda q: index.search(q, 10, threads=2).keys, queries)
        yield {"method": "usearch hnsw", "knob": f"expansion={expansion}", "build_s": build,
               "batched_qps": batched, "single_qps": single, "recall@10": recall_at_10(ids, exact_ids)}


def measure(size: int, dim: int, query_count: int, seed: int) -> list[dict]:
    import faiss

    from gritkit.rag.search import ExactSearch

    faiss.omp_set_num_threads(2)
    rng = np.random.default_rng(seed)
    vectors, queries = synthetic(size, dim, rng), synthetic(query_count, dim, rng)
    exact = ExactSearch(vectors)
    exact_ids, batched, single = timed_queries(lambda q: exact.search(q, 10)[1].numpy(), queries)
    rows = [{"method": "gritkit exact", "knob": "", "build_s": 0.0, "batched_qps": batched, "single_qps": single,
             "recall@10": 1.0}]
    flat = faiss.IndexFlatIP(dim)  # exact too: FAISS's own brute force, for reference
    flat.add(vectors)
    ids, flat_batched, flat_single = timed_queries(lambda q: flat.search(q, 10)[1], queries)
    rows.append({"method": "faiss flat (exact)", "knob": "", "build_s": 0.0, "batched_qps": flat_batched,
                 "single_qps": flat_single, "recall@10": recall_at_10(ids, exact_ids)})
    flat.reset()  # frees its copy of the vectors before the next backends are built
    rows += gritkit_rows(vectors, queries, exact_ids, {"ivf": ("nprobe", (16, 64, 256)),
                                                       "hnsw": ("ef_search", (64, 128, 256))})
    rows += usearch_rows(vectors, queries, exact_ids, (64, 128, 256))
    for row in rows:
        row.update(size=size, single_speedup=row["single_qps"] / single, batched_speedup=row["batched_qps"] / batched)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dim", type=int, default=576)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="end with one JSON line holding every row")
    args = parse_args(parser, argv, smoke=dict(sizes="2000", dim=32, queries=50))
    import torch

    torch.set_num_threads(2)
    rows = []
    print("| vectors | method | setting | build s | queries/s batched | queries/s one by one | x exact (one by one) | recall@10 |")
    print("|---|---|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        for row in measure(size, args.dim, args.queries, args.seed):
            rows.append(row)
            print(f"| {size:,} | {row['method']} | {row['knob']} | {row['build_s']:.1f} | {row['batched_qps']:,.0f} | "
                  f"{row['single_qps']:,.0f} | {row['single_speedup']:.1f}x | {row['recall@10']:.3f} |", flush=True)
    if args.json:
        print(json.dumps({"dim": args.dim, "queries": args.queries, "rows": rows}))


if __name__ == "__main__":
    main()
