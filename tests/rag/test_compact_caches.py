"""Doc caches that fit on a disk: int8 keys/values with one scale per vector, and a bounded
pool of recently retrieved documents' caches that recomputes a missing one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gritkit.rag import RagIndex, RagPipeline, embed_with_cache
from gritkit.rag.cache_pool import DocCachePool
from gritkit.rag.kv import KVSegment
from gritkit.rag.storage import DocCacheStore, quantize_int8


def test_int8_levels_are_within_half_a_level_and_the_maximum_is_kept():
    block = torch.randn(5, 3, 2, 4, 16) * torch.logspace(-3, 1, 16)  # outlier channels, as keys have
    levels, scales = quantize_int8(block)
    assert levels.dtype == torch.int8 and scales.dtype == torch.float16
    assert levels.abs().amax(dim=-1).min() >= 126  # the largest entry uses (nearly) the full range
    restored = levels.float() * scales.float()[..., None]
    assert ((restored - block).abs() <= 0.5 * scales.float()[..., None] * 1.01 + 1e-7).all()


@pytest.fixture(scope="module")
def int8_index(tiny_llama, tiny_llama_dir, corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("int8-index")
    index = RagIndex.build(tiny_llama, corpus[200:220], model_path=tiny_llama_dir, cache_docs=True,
                           cache_dir=root / "cache", cache_dtype="int8")
    return index.save(root / "index")


def test_int8_store_reads_back_its_levels_times_scales(int8_index, tiny_llama, corpus):
    index = RagIndex.load(int8_index)
    assert index.settings["doc_cache_dtype"] == "int8"
    store = index.doc_caches
    _, segments = embed_with_cache(tiny_llama, [corpus[203]])
    both = torch.stack([segments[0].keys, segments[0].values], dim=1).permute(3, 0, 1, 2, 4)
    levels, scales = quantize_int8(both.float())
    start, end = int(store.offsets[3]), int(store.offsets[4])
    np.testing.assert_array_equal(store.kv[start:end], levels.numpy())
    np.testing.assert_array_equal(store.scales[start:end], scales.numpy())
    read = store.segment(3, torch.float32)
    expected = (levels.float() * scales.float()[..., None]).permute(1, 2, 3, 0, 4)
    torch.testing.assert_close(read.keys, expected[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(read.values, expected[:, 1], rtol=0, atol=0)
    assert store.segment(3).keys.dtype == torch.float16  # default read of an int8 store
    torch.testing.assert_close(read.keys, segments[0].keys, atol=float(scales.float().max()), rtol=0)
    config = tiny_llama.model.config
    layers, heads = config.num_hidden_layers, config.num_key_value_heads
    head_dim = config.hidden_size // config.num_attention_heads
    assert store.bytes_per_token == layers * 2 * heads * (head_dim + 2)


def test_int8_doc_cache_answers_from_the_dequantized_cache(int8_index, tiny_llama):
    pipeline = RagPipeline(tiny_llama, RagIndex.load(int8_index))
    prepared = pipeline.prepare("how do I read a file", mode="doc_cache", top_k=2)
    first = prepared.documents[0].id
    segment = pipeline.index.doc_caches.segment(first, torch.float32)
    layer0 = prepared.cache.layers[0]
    torch.testing.assert_close(layer0.keys[0, :, : len(segment)], segment.keys[0], rtol=0, atol=0)
    assert len(pipeline.generate(prepared, max_new_tokens=3)) == 3


def test_a_store_missing_its_scales_is_named(int8_index, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(int8_index / "doc_cache", copy)
    (copy / "scales.npy").unlink()
    with pytest.raises(FileNotFoundError, match="has no scales.npy"):
        DocCacheStore(copy)


# ---------------------------------------------------------------------- the LRU pool
def fake_segment(tokens: int) -> KVSegment:
    return KVSegment(list(range(tokens)), torch.zeros(1, 1, tokens, 4), torch.zeros(1, 1, tokens, 4))


def test_pool_evicts_the_least_recently_used_within_its_budget():
    pool = DocCachePool(capacity_bytes=3 * 2 * 16 * 10)  # three 10-token segments (keys + values, 16 B a token)
    computed = []

    def compute(doc_id, tokens=10):
        return lambda: computed.append(doc_id) or fake_segment(tokens)
    for doc_id in (1, 2, 3):
        pool.get(doc_id, compute(doc_id))
    pool.get(1, compute(1))            # a hit: 1 becomes the most recent
    pool.get(4, compute(4))            # evicts 2, the least recently used
    assert computed == [1, 2, 3, 4]
    assert 2 not in pool and all(d in pool for d in (1, 3, 4))
    pool.get(5, compute(5, tokens=31))  # larger than the budget: returned, not kept
    assert 5 not in pool and len(pool) == 3
    assert pool.stats() == {"documents": 3, "bytes": 960, "capacity_bytes": 960, "hits": 1, "misses": 5,
                            "evictions": 1, "hit_rate": 1 / 6}
    with pytest.raises(ValueError, match="capacity_bytes must be a positive int"):
        DocCachePool(0)


def test_pool_recomputes_what_the_index_did_not_store(tiny_llama, corpus, tmp_path):
    documents = corpus[300:330]
    stored = RagIndex.build(tiny_llama, documents, cache_docs=True, cache_dir=tmp_path / "cache",
                            cache_dtype="float32").save(tmp_path / "stored")
    bare = RagIndex.build(tiny_llama, documents).save(tmp_path / "bare")  # no doc caches at all
    with pytest.raises(ValueError, match="has no doc caches"):
        RagPipeline(tiny_llama, RagIndex.load(bare)).ask("read a json file", mode="doc_cache")
    pool = DocCachePool(capacity_bytes=10**8)
    pooled = RagPipeline(tiny_llama, RagIndex.load(bare), doc_cache_pool=pool)
    reference = RagPipeline(tiny_llama, RagIndex.load(stored))
    retrieved = set()
    for question in ("read a json file", "sort a list of numbers", "read a json file"):
        ours = pooled.ask(question, mode="doc_cache", top_k=2, max_new_tokens=6)
        expected = reference.ask(question, mode="doc_cache", top_k=2, max_new_tokens=6)
        assert ours.answer_token_ids == expected.answer_token_ids
        assert [d.id for d in ours.documents] == [d.id for d in expected.documents]
        retrieved |= {d.id for d in ours.documents}
    # each document was embedded once; every later retrieval of it (the repeated question's too) hit
    assert pool.stats()["misses"] == len(retrieved) and pool.stats()["hits"] == 6 - len(retrieved) >= 2


def test_pool_in_front_of_a_store_reads_the_store_on_a_miss(int8_index, tiny_llama, monkeypatch):
    from gritkit.rag import retriever as retriever_module

    def no_embedding(*args, with_cache=False, **kwargs):
        if with_cache and len(args[1]) == 1 and args[1][0] in RagIndex.load(int8_index).documents:
            raise AssertionError("a stored document was embedded again")
        return real(*args, with_cache=with_cache, **kwargs)
    real = retriever_module.embed_with_cache
    monkeypatch.setattr(retriever_module, "embed_with_cache", no_embedding)
    pool = DocCachePool(capacity_bytes=10**8)
    pipeline = RagPipeline(tiny_llama, RagIndex.load(int8_index), doc_cache_pool=pool)
    prepared = pipeline.prepare("how do I read a file", mode="doc_cache", top_k=1)
    stored = pipeline.index.doc_caches.segment(prepared.documents[0].id, torch.float32)
    torch.testing.assert_close(prepared.cache.layers[0].keys[0, :, : len(stored)], stored.keys[0], rtol=0, atol=0)
    assert pool.stats()["misses"] == 1
