"""Compact embeddings: 8-bit and 1-bit forms of float vectors, under sentence-transformers' names.

- ``int8`` / ``uint8``: each dimension mapped linearly from its calibration range [min, max] onto
  256 levels (``int8`` shifted by -128). The ranges come from ``calibration`` vectors (typically a
  sample of the corpus), or from the vectors being quantised when none are given: then queries
  and documents quantised separately use different scales, so pass the same calibration to both.
- ``binary`` / ``ubinary``: one bit per dimension (1 where the value is > 0), packed 8 to a byte
  (numpy's bit order, first dimension in the high bit); ``binary`` is the packed byte - 128 as
  int8. Hamming distance between packed vectors ranks like the cosine of their +-1 vectors.

``binary_rescore`` is the usual search recipe with binary vectors: candidates by Hamming distance,
then re-ranked by the float query's dot product with the candidates' +-1 vectors.
"""

from __future__ import annotations

import numpy as np

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


def int8_ranges(calibration: np.ndarray) -> np.ndarray:
    """Per-dimension (min, max) of ``calibration`` (n, dim), shape (2, dim)."""
    calibration = np.asarray(calibration, dtype=np.float32)
    if calibration.ndim != 2 or not len(calibration):
        raise ValueError(f"calibration must be a non-empty (n, dim) array, got shape {calibration.shape}")
    return np.stack([calibration.min(axis=0), calibration.max(axis=0)])


def quantize(vectors: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """``vectors`` (n, dim) float in ``precision`` (see the module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    vectors = np.asarray(vectors, dtype=np.float32)
    if precision == "float32":
        return vectors
    if precision in ("binary", "ubinary"):
        packed = np.packbits(vectors > 0, axis=-1)
        return (packed.astype(np.int16) - 128).astype(np.int8) if precision == "binary" else packed
    ranges = int8_ranges(vectors.reshape(-1, vectors.shape[-1])) if ranges is None else np.asarray(ranges, np.float32)
    if ranges.shape != (2, vectors.shape[-1]):
        raise ValueError(f"ranges must have shape (2, {vectors.shape[-1]}), got {ranges.shape}")
    steps = np.maximum(ranges[1] - ranges[0], 1e-12) / 255
    levels = np.clip(np.round((vectors - ranges[0]) / steps), 0, 255)  # out-of-range values saturate
    return (levels - 128).astype(np.int8) if precision == "int8" else levels.astype(np.uint8)


def unpack_binary(packed: np.ndarray, dim: int) -> np.ndarray:
    """The +-1 float vectors (n, dim) of ``binary`` or ``ubinary`` vectors."""
    packed = np.asarray(packed)
    if packed.dtype == np.int8:
        packed = (packed.astype(np.int16) + 128).astype(np.uint8)
    bits = np.unpackbits(packed, axis=-1)[..., :dim]
    return bits.astype(np.float32) * 2 - 1


def binary_rescore(query_vectors: np.ndarray, packed_docs: np.ndarray, dim: int, candidates: int) -> np.ndarray:
    """Scores (queries, docs) for ranking: the top ``candidates`` documents of each query by Hamming
    distance get the float query's dot product with their +-1 vectors; the others get -inf."""
    docs = unpack_binary(packed_docs, dim)
    query_signs = np.where(np.asarray(query_vectors) > 0, 1.0, -1.0).astype(np.float32)
    hamming_order = query_signs @ docs.T  # = dim - 2 * Hamming distance
    candidates = min(candidates, docs.shape[0])
    top = np.argpartition(-hamming_order, candidates - 1, axis=1)[:, :candidates]
    scores = np.full(hamming_order.shape, -np.inf, dtype=np.float32)
    rows = np.arange(len(top))[:, None]
    scores[rows, top] = np.einsum("qd,qkd->qk", np.asarray(query_vectors, np.float32), docs[top])
    return scores
