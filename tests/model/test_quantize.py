"""Compact embeddings against hand computations and sentence-transformers' definitions."""

from __future__ import annotations

import numpy as np
import pytest

from gritkit.model.quantize import binary_rescore, int8_ranges, quantize, unpack_binary


def _vectors(n=20, dim=19, seed=0):
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def test_binary_packs_the_sign_bits_high_bit_first():
    v = np.array([[0.5, -1, 2, 0, -0.1, 3, 1, -2, 4, -4]], dtype=np.float32)
    # bits 1 0 1 0 0 1 1 0 | 1 0 (padded with zeros): 0b10100110 = 166, 0b10000000 = 128
    assert quantize(v, "ubinary").tolist() == [[166, 128]]
    assert quantize(v, "binary").tolist() == [[166 - 128, 0]]
    np.testing.assert_array_equal(unpack_binary(quantize(v, "binary"), 10), np.where(v > 0, 1.0, -1.0))


def test_hamming_distance_ranks_like_the_sign_vectors_cosine():
    docs, query = _vectors(), _vectors(1, seed=1)
    packed = quantize(docs, "ubinary")
    hamming = np.unpackbits(packed ^ quantize(query, "ubinary"), axis=-1)[:, :19].sum(axis=1).astype(int)
    signs = np.where(docs > 0, 1, -1) @ np.where(query[0] > 0, 1, -1)
    np.testing.assert_array_equal(signs, 19 - 2 * hamming)


def test_int8_levels_round_trip_within_half_a_step():
    vectors = _vectors()
    ranges = int8_ranges(vectors)
    for precision, shift in (("int8", 128), ("uint8", 0)):
        levels = quantize(vectors, precision, ranges).astype(np.float32) + shift
        step = (ranges[1] - ranges[0]) / 255
        np.testing.assert_allclose(ranges[0] + levels * step, vectors, atol=float(step.max()) / 2 + 1e-6)
    assert quantize(vectors, "int8", ranges).min() == -128 and quantize(vectors, "int8", ranges).max() == 127
    outside = quantize(vectors * 10, "int8", ranges)  # values outside the calibration saturate
    assert outside.min() == -128 and outside.max() == 127
    with pytest.raises(ValueError, match=r"ranges must have shape \(2, 19\)"):
        quantize(vectors, "int8", ranges[:, :3])
    with pytest.raises(ValueError, match="precision must be one of"):
        quantize(vectors, "int4")


def test_binary_rescore_reranks_the_hamming_candidates_by_the_float_query():
    docs, queries = _vectors(50, 24), _vectors(3, 24, seed=2)
    scores = binary_rescore(queries, quantize(docs, "binary"), 24, candidates=10)
    signs = np.where(docs > 0, 1.0, -1.0)
    for q in range(3):
        hamming_rank = np.where(queries[q] > 0, 1.0, -1.0) @ signs.T
        kept = np.isfinite(scores[q])
        assert kept.sum() == 10
        assert hamming_rank[kept].min() >= hamming_rank[~kept].max()  # the 10 nearest by Hamming
        np.testing.assert_allclose(scores[q][kept], (signs @ queries[q])[kept], rtol=1e-5)


def test_encode_returns_the_compact_forms(tiny_llama):
    texts = ["Return the number of items in a container.", "Open a file", "x"]
    floats = tiny_llama.encode(texts)
    np.testing.assert_array_equal(tiny_llama.encode(texts, precision="ubinary"), quantize(floats, "ubinary"))
    ranges = int8_ranges(floats)
    np.testing.assert_array_equal(tiny_llama.encode(texts, precision="int8", int8_ranges=ranges),
                                  quantize(floats, "int8", ranges))
    assert tiny_llama.encode(texts[0], precision="binary").shape == (tiny_llama.embedding_dim // 8,)
    with pytest.raises(ValueError, match="precision must be one of"):
        tiny_llama.encode(texts, precision="fp8")
