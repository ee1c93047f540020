"""Retrieval quality of truncated and compact embeddings, against the full float32 vectors.

    python benchmarks/compact_embeddings.py --model gritkit-smol [--quick] [--json]
    python benchmarks/compact_embeddings.py --model A --model B      # side by side (e.g. with and without Matryoshka)
    python benchmarks/compact_embeddings.py --smoke --json           # gritkit-tiny on a small data build's quick tasks

For every retrieval task of the held-out suite of a ``gritkit data build`` (``--data``, built there
when missing; texts at 512 tokens; ``--quick``: its hash-chosen
subsets at 256 tokens, as ``gritkit eval`` does), each model embeds the queries and the corpus once in float32; every other row is
derived from those vectors, so the rows differ only in what is kept:
  - ``dim N``: the first N dimensions, normalised again (``encode(truncate_dim=N)``), for N =
    the full size halved down to 16 or more;
  - ``int8``: 8-bit levels per dimension over the corpus vectors' range (one calibration for
    queries and documents), scored by the cosine of the vectors the levels stand for (what a
    scalar-quantised index such as FAISS's SQ8 computes);
  - ``binary``: sign bits, scored by Hamming distance (both sides binary);
  - ``binary + rescore``: binary documents, the 40 nearest by Hamming re-ranked by the float
    query's dot product with their +-1 vectors (the usual recipe);
with the bytes per document vector. Prints nDCG@10 per task and their mean, and the ratio of
each row's mean to float32's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import data_dir, parse_args  # noqa: E402
from gritkit.evaluate.retrieval import dense_run, scores_from_run  # noqa: E402
from gritkit.evaluate.suite import QUICK_MAX_LENGTH, TASKS, load_task, subsample  # noqa: E402
from gritkit.model.quantize import binary_rescore, int8_ranges, quantize, unpack_binary  # noqa: E402

RESCORE_CANDIDATES = 40


def ndcg(scores: np.ndarray, task: dict, query_ids: list[str], doc_ids: list[str]) -> float:
    """nDCG@10 of a (queries, docs) score matrix, ranked as the suite ranks."""
    return scores_from_run(dense_run_from_scores(scores, query_ids, doc_ids), task["qrels"])["ndcg@10"]


def dense_run_from_scores(scores: np.ndarray, query_ids, doc_ids, k: int = 100) -> dict:
    k = min(k, len(doc_ids))
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return {q: {doc_ids[j]: float(scores[i, j]) for j in top[i] if np.isfinite(scores[i, j])}
            for i, q in enumerate(query_ids)}


def rows_for(queries: np.ndarray, docs: np.ndarray, task: dict, query_ids, doc_ids) -> dict[str, tuple[float, int]]:
    """{row name: (nDCG@10, bytes per document vector)} for one task."""
    full = queries.shape[1]
    rows = {}
    dim = full
    while dim >= 16:
        q, d = (v[:, :dim] / np.linalg.norm(v[:, :dim], axis=1, keepdims=True) for v in (queries, docs))
        run = dense_run(q, d, query_ids, doc_ids)
        rows["float32" if dim == full else f"dim {dim}"] = (scores_from_run(run, task["qrels"])["ndcg@10"], 4 * dim)
        dim //= 2
    ranges = int8_ranges(docs)
    step = (ranges[1] - ranges[0]) / 255
    q8, d8 = ((quantize(v, "int8", ranges).astype(np.float32) + 128) * step + ranges[0] for v in (queries, docs))
    q8, d8 = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in (q8, d8))
    rows["int8"] = (ndcg(q8 @ d8.T, task, query_ids, doc_ids), full)
    packed = quantize(docs, "binary")
    signs = unpack_binary(quantize(queries, "binary"), full)
    rows["binary"] = (ndcg(signs @ unpack_binary(packed, full).T, task, query_ids, doc_ids), packed.shape[1])
    rescored = binary_rescore(queries, packed, full, RESCORE_CANDIDATES)
    rows["binary + rescore"] = (ndcg(rescored, task, query_ids, doc_ids), packed.shape[1])
    return rows


def measure(model_name: str, tasks: dict[str, dict], max_length: int) -> dict[str, dict[str, tuple[float, int]]]:
    from gritkit import GritLM

    model = GritLM.from_pretrained(model_name, device="cpu")
    out = {}
    for name, task in tasks.items():
        query_ids, doc_ids = list(task["queries"]), list(task["corpus"])
        queries = model.encode([task["queries"][q] for q in query_ids], instruction=task["instruction"],
                               max_length=max_length, normalize_embeddings=False)
        docs = model.encode([task["corpus"][d] for d in doc_ids], max_length=max_length,
                            normalize_embeddings=False)
        out[name] = rows_for(queries, docs, task, query_ids, doc_ids)
        print(f"  {model_name} {name}: float32 {out[name]['float32'][0]:.3f}", file=sys.stderr, flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="a model directory or shipped name (repeatable; required)")
    parser.add_argument("--data", default="runs/data",
                        help="a `gritkit data build` directory (built there when missing)")
    parser.add_argument("--quick", action="store_true", help="the suite's quick subsets")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of every figure")
    args = parse_args(parser, argv, smoke=dict(model=["gritkit-tiny"], data=None, quick=True))
    if not args.model:
        parser.error("--model is required")
    data = data_dir(args)
    tasks = {name: subsample(load_task(data, file), args.quick)
             for name, (kind, file) in TASKS.items() if kind == "retrieval"}
    results = {m: measure(m, tasks, QUICK_MAX_LENGTH if args.quick else 512) for m in args.model}
    summary = {}
    for model_name, by_task in results.items():
        names = list(next(iter(by_task.values())))
        print(f"\n{model_name} ({'quick' if args.quick else 'full'} suite, nDCG@10)")
        print(f"{'row':<18}{'bytes':>7}" + "".join(f"{t[:14]:>16}" for t in by_task) + f"{'mean':>8}{'/ float32':>11}")
        base = statistics.mean(by_task[t]["float32"][0] for t in by_task)
        summary[model_name] = {}
        for row in names:
            values = [by_task[t][row][0] for t in by_task]
            mean = statistics.mean(values)
            summary[model_name][row] = {"mean_ndcg@10": mean, "ratio": mean / base,
                                        "bytes": by_task[next(iter(by_task))][row][1],
                                        "by_task": dict(zip(by_task, values))}
            print(f"{row:<18}{summary[model_name][row]['bytes']:>7}" + "".join(f"{v:>16.3f}" for v in values)
                  + f"{mean:>8.3f}{mean / base:>10.2f}x")
    if args.json:
        print(json.dumps({"quick": args.quick, "rescore_candidates": RESCORE_CANDIDATES, "models": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
