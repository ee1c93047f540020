"""How a RagIndex finds the nearest documents: exact, or approximately through FAISS.

    search = build_search("ivf", embeddings)           # or "exact", "hnsw", "auto"
    scores, ids = search.search(query_vectors, top_k=10)
    search.save(directory); load_search(directory, search.settings, embeddings)

Vectors are unit length, so inner product is cosine similarity for every backend.

- ``exact``: one matrix product per chunk of documents, no extra files; the default below
  ``AUTO_ANN_SIZE`` documents, where it is fast enough for a question at a time.
- ``ivf``: FAISS ``IndexIVFFlat``: k-means cells (``nlist``, 4 sqrt(n)), a query scans its
  ``nprobe`` nearest cells (5% of them by default). Chosen for large indexes because it builds several times
  faster than a graph on few cores, and ``nprobe`` trades recall for speed at query time.
- ``hnsw``: FAISS ``IndexHNSWFlat``, a proximity graph: faster queries at equal recall, slower
  builds. benchmarks/search.py measures all three (and usearch's graph) at 10k, 100k and 1M.

The FAISS backends keep their own float32 copy of the vectors in ``search.faiss`` beside the
index's ``embeddings.npy``.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

SEARCH_BACKENDS = ("auto", "exact", "ivf", "hnsw")
# Below this many documents ``auto`` searches exactly (benchmarks/search.py, 2 cores, width 576:
# about 10 ms a question at 100k documents, 0.5 s at 1M, where memory bandwidth bounds it).
AUTO_ANN_SIZE = 200_000
SEARCH_FILE = "search.faiss"
# IVF probes this share of its cells unless told otherwise: recall@10 0.96 at 100k documents
# (64 of 1,264 cells) and about 0.99 at 1M (200 of 4,000; 256 gave 0.993) on
# benchmarks/search.py's clusterless vectors.
DEFAULT_PROBED_SHARE = 0.05
DEFAULT_HNSW_M = 32
# recall@10 0.98 at 100k, 0.91 at 1M on the same vectors.
DEFAULT_EF_SEARCH = 256
_EF_CONSTRUCTION = 80
# Search this many documents per matrix product, so a float16 index is never copied whole to float32.
_EXACT_CHUNK = 65536


class ExactSearch:
    """Top-k by one matrix product over the (possibly memory-mapped) embeddings."""

    settings = {"backend": "exact"}

    def __init__(self, embeddings: np.ndarray):
        self.embeddings = embeddings

    def search(self, queries: np.ndarray, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
        import torch  # here, not at the top: the CLI reads this module's constants without torch

        queries = torch.from_numpy(queries)
        best_scores, best_ids = None, None
        for start in range(0, len(self.embeddings), _EXACT_CHUNK):
            with warnings.catch_warnings():  # a read-only memory map, only read by the product
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                chunk = torch.from_numpy(self.embeddings[start: start + _EXACT_CHUNK])
            # float32 is used in place (a copy per question was most of its time); float16 converted per chunk
            chunk = chunk.float()
            scores, ids = torch.topk(queries @ chunk.T, min(top_k, len(chunk)), dim=1)
            ids += start
            if best_scores is not None:  # keep the running top-k only: memory stays (queries x k)
                scores, ids = torch.cat([best_scores, scores], 1), torch.cat([best_ids, ids], 1)
                scores, order = torch.topk(scores, min(top_k, scores.shape[1]), dim=1)
                ids = torch.gather(ids, 1, order)
            best_scores, best_ids = scores, ids
        return best_scores, best_ids

    def save(self, directory: Path) -> None:
        """Nothing to write: the index's embeddings are the search structure."""


class FaissSearch:
    """A FAISS index over the embeddings (``ivf`` or ``hnsw``), inner product metric."""

    def __init__(self, index, settings: dict):
        self.index = index
        self.settings = settings

    @classmethod
    def build(cls, backend: str, embeddings: np.ndarray, nprobe: int | None = None,
              ef_search: int | None = None, seed: int = 0) -> "FaissSearch":
        faiss = _faiss()
        vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
        count, dim = vectors.shape
        if backend == "ivf":
            nlist = max(1, min(int(4 * math.sqrt(count)), count // 39))  # FAISS wants >= 39 points a cell
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = seed
            sample = np.random.default_rng(seed).choice(count, min(count, 64 * nlist), replace=False)
            index.train(vectors[np.sort(sample)])
            index.add(vectors)
            nprobe = nprobe or max(1, round(DEFAULT_PROBED_SHARE * nlist))
            settings = {"backend": "ivf", "nlist": nlist, "nprobe": min(nprobe, nlist)}
        elif backend == "hnsw":
            index = faiss.IndexHNSWFlat(dim, DEFAULT_HNSW_M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = _EF_CONSTRUCTION
            index.add(vectors)
            settings = {"backend": "hnsw", "m": DEFAULT_HNSW_M, "ef_search": ef_search or DEFAULT_EF_SEARCH}
        else:
            raise ValueError(f"unknown FAISS backend {backend!r}")
        search = cls(index, settings)
        search._apply_settings()
        return search

    def tune(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change the recall/speed knob of this backend for the next searches (``save`` keeps it)."""
        knob, value = ("nprobe", nprobe) if self.settings["backend"] == "ivf" else ("ef_search", ef_search)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{knob} must be a positive int, got {value!r}")
            self.settings[knob] = value
        self._apply_settings()

    def _apply_settings(self) -> None:
        if self.settings["backend"] == "ivf":
            self.index.nprobe = self.settings["nprobe"]
        else:
            self.index.hnsw.efSearch = self.settings["ef_search"]

    def search(self, queries: np.ndarray, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
        scores, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), top_k)
        if (ids < 0).any():  # fewer than top_k documents in the probed cells
            raise RuntimeError(f"approximate search found fewer than {top_k} documents; raise nprobe "
                               f"(now {self.settings.get('nprobe')}) or search exactly")
        import torch

        return torch.from_numpy(scores), torch.from_numpy(ids)

    def save(self, directory: Path) -> None:
        _faiss().write_index(self.index, str(Path(directory) / SEARCH_FILE))

    @classmethod
    def load(cls, directory: Path, settings: dict) -> "FaissSearch":
        path = Path(directory) / SEARCH_FILE
        if not path.is_file():
            raise FileNotFoundError(f"index {directory} searches with {settings['backend']} but has no {SEARCH_FILE}")
        search = cls(_faiss().read_index(str(path)), dict(settings))
        search._apply_settings()
        return search


def resolve_backend(backend: str, count: int) -> str:
    """``auto`` is exact below ``AUTO_ANN_SIZE`` documents and ``ivf`` from there."""
    if backend not in SEARCH_BACKENDS:
        raise ValueError(f"search backend must be one of {', '.join(SEARCH_BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return "exact" if count < AUTO_ANN_SIZE else "ivf"
    return backend


def build_search(backend: str, embeddings: np.ndarray, nprobe: int | None = None, ef_search: int | None = None):
    """The search structure ``backend`` (``auto``, ``exact``, ``ivf``, ``hnsw``) over unit vectors."""
    backend = resolve_backend(backend, len(embeddings))
    if backend == "exact":
        return ExactSearch(embeddings)
    return FaissSearch.build(backend, embeddings, nprobe=nprobe, ef_search=ef_search)


def load_search(directory: Path, settings: dict | None, embeddings: np.ndarray):
    """The search an index directory was saved with (exact when it records none)."""
    if not settings or settings.get("backend") == "exact":
        return ExactSearch(embeddings)
    return FaissSearch.load(directory, settings)


def _faiss():
    try:
        import faiss
    except ImportError as exc:
        raise ImportError("approximate search needs FAISS: pip install 'gritkit[rag]' (faiss-cpu)") from exc
    return faiss
