"""RAG modes: exact prompt strings, cache plumbing against plain generation and a hand-made reference."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from gritkit.model.gritlm import decoder_of
from gritkit.rag import CACHE_MODES, RagIndex, RagPipeline

QUESTION = "How do I parse a JSON document?"
QF = "Optionally using the prior context answer the query prior to it"
DF = "Answer the prior query while optionally using the context prior to it"


@pytest.fixture(scope="module")
def documents(corpus):
    return corpus[:24]


@pytest.fixture(scope="module")
def pipeline(tiny_llama, documents, tmp_path_factory):
    """Bidirectional caches stored in float32, so the stored cache is the embedding pass's own."""
    root = tmp_path_factory.mktemp("rag")
    index = RagIndex.build(tiny_llama, documents, cache_docs=True, cache_dir=root / "cache", cache_dtype="float32")
    index.save(root / "index")
    return RagPipeline.load(root / "index", model=tiny_llama)


@pytest.fixture(scope="module")
def causal_pipeline(tiny_llama, documents, tmp_path_factory):
    root = tmp_path_factory.mktemp("rag-causal")
    index = RagIndex.build(tiny_llama, documents, cache_docs=True, cache_dir=root / "cache", cache_dtype="float32",
                           causal_cache=True)
    return RagPipeline(tiny_llama, index)


def _ids(tokenizer, text: str, bos: bool) -> list[int]:
    return tokenizer(text, add_special_tokens=bos)["input_ids"]


@pytest.mark.parametrize("mode", ["no_rag", "rag_query_first", "rag_doc_first"])
def test_uncached_prompts_are_the_documented_strings(pipeline, mode):
    prepared = pipeline.prepare(QUESTION, mode, top_k=2)
    docs = "\n\n".join(d.text for d in prepared.documents)
    expected = {"no_rag": f"<|user|>\n{QUESTION}\n<|assistant|>\n",
                "rag_query_first": f"<|user|>\n{QUESTION}\n\n{docs}\n\n{QF}\n<|assistant|>\n",
                "rag_doc_first": f"<|user|>\n{docs}\n\n{QUESTION}\n\n{DF}\n<|assistant|>\n"}[mode]
    assert prepared.cache is None and prepared.cached_tokens == 0
    assert prepared.input_ids == _ids(pipeline.model.tokenizer, expected, bos=True)
    assert len(prepared.documents) == (0 if mode == "no_rag" else 2)


@pytest.mark.parametrize("mode", ["query_cache", "doc_cache"])
def test_causal_cache_gives_the_tokens_of_plain_generation(causal_pipeline, mode):
    """With causal caches, cache + continuation must be token-identical to generating over the
    whole prompt with no cache: this checks positions, masks and the cache hand-over."""
    prepared = causal_pipeline.prepare(QUESTION, mode, top_k=1)
    cached = causal_pipeline.generate(prepared, max_new_tokens=12, min_new_tokens=12)
    model = causal_pipeline.model
    ids = torch.tensor([prepared.input_ids])
    with torch.no_grad():
        plain = model.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                                     min_new_tokens=12, do_sample=False,
                                     pad_token_id=model.tokenizer.pad_token_id)[0, ids.shape[1]:].tolist()
    assert len(cached) == 12
    assert cached == plain


def _hand_reference(grit, mode: str, doc_texts: list[str], new_tokens: int):
    """Cache and greedy tokens computed by hand with transformers: each segment encoded
    bidirectionally at its true (offset) positions, then a token-by-token greedy loop. The index
    records no query instruction, so the query is embedded after the model's default one."""
    tok = grit.tokenizer
    instruction = grit.config.default_query_instruction
    query_seg = _ids(tok, f"<|user|>\n{instruction}\n<|embed|>\n{QUESTION}", bos=True)
    doc_segs = [_ids(tok, f"<|embed|>\n{text}", bos=True) for text in doc_texts]
    docs = "\n\n".join(doc_texts)
    order, user = {"query_cache": ([query_seg], f"{docs}\n\n{QF}"),
                   "doc_cache": (doc_segs, f"{QUESTION}\n\n{DF}"),
                   "query_doc_cache": ([query_seg, *doc_segs], QF),
                   "doc_query_cache": ([*doc_segs, query_seg], DF)}[mode]
    tail = _ids(tok, f"\n<|user|>\n{user}\n<|assistant|>\n", bos=False)
    keys, values, offset = [[] for _ in grit.model.model.layers], [[] for _ in grit.model.model.layers], 0
    with torch.no_grad():
        for segment in order:
            out = decoder_of(grit.model)(input_ids=torch.tensor([segment]), is_causal=False, use_cache=True,
                                         position_ids=torch.arange(len(segment))[None] + offset)
            for layer, cached in enumerate(out.cache.layers):
                keys[layer].append(cached.keys)
                values[layer].append(cached.values)
            offset += len(segment)
        cache = DynamicCache(config=grit.model.config)
        for layer in range(len(keys)):
            cache.update(torch.cat(keys[layer], 2), torch.cat(values[layer], 2), layer)
        generated, step = [], tail
        for _ in range(new_tokens):
            logits = grit.model(input_ids=torch.tensor([step]), cache=cache).logits
            generated.append(int(logits[0, -1].argmax()))
            step = generated[-1:]
    return sum(order, []) + tail, offset, generated


@pytest.mark.parametrize("mode", CACHE_MODES)
def test_bidirectional_cache_modes_match_hand_reference(pipeline, mode):
    prepared = pipeline.prepare(QUESTION, mode, top_k=2)
    doc_texts = [d.text for d in prepared.documents]
    expected_ids, cached_length, expected_tokens = _hand_reference(pipeline.model, mode, doc_texts, 10)
    assert prepared.input_ids == expected_ids
    assert prepared.cached_tokens == cached_length == prepared.cache.get_seq_length()
    got = pipeline.generate(prepared, max_new_tokens=10, min_new_tokens=10)
    assert got == expected_tokens


def test_ask_result(pipeline, documents):
    result = pipeline.ask(QUESTION, mode="doc-cache", top_k=3, max_new_tokens=6)
    assert result.mode == "doc_cache"
    assert [d.text for d in result.documents] == [documents[d.id] for d in result.documents]
    scores = [d.score for d in result.documents]
    assert scores == sorted(scores, reverse=True)
    assert result.answer == pipeline.model.tokenizer.decode(result.answer_token_ids, skip_special_tokens=True)
    assert result.to_dict()["documents"][0]["id"] == result.documents[0].id


def test_doc_modes_need_doc_caches(tiny_llama, documents):
    bare = RagPipeline(tiny_llama, RagIndex.build(tiny_llama, documents[:4]))
    with pytest.raises(ValueError, match="cache-docs"):
        bare.ask(QUESTION, mode="doc_cache")
    with pytest.raises(ValueError, match="unknown RAG mode"):
        bare.ask(QUESTION, mode="doc_caching")


def test_cached_modes_continue_in_the_models_own_chat_markers(tiny_llama, documents, tmp_path):
    from gritkit.model.formats import GritFormat

    chatml = GritFormat(after_cache="<|assistant|>user\n{user}<|embed|>\n<|user|>assistant\n")
    model = tiny_llama.with_config(format=chatml)
    index = RagIndex.build(model, documents[:4], cache_docs=True, cache_dir=tmp_path / "cache", cache_dtype="float32")
    prepared = RagPipeline(model, index).prepare(QUESTION, "doc_cache", top_k=1, answer_prefix="So")
    tail = _ids(model.tokenizer, f"<|assistant|>user\n{QUESTION}\n\n{DF}<|embed|>\n<|user|>assistant\nSo", bos=False)
    assert prepared.input_ids[prepared.cached_tokens:] == tail


def test_an_index_saved_before_a_format_field_existed_still_matches(pipeline):
    settings = pipeline.index.settings
    saved = settings["grit_config"]
    settings["grit_config"] = {**saved, "format": {k: v for k, v in saved["format"].items() if k != "after_cache"}}
    try:
        pipeline.index.check_model(pipeline.model)  # the missing field is at its default: no error
    finally:
        settings["grit_config"] = saved


def test_compiled_decoding_continues_every_cache_with_the_eager_tokens(pipeline, monkeypatch):
    """With ``compile=True`` the doc/query caches are copied into the static cache of the compiled
    step; greedy answers are the eager decoder's tokens, and so are those decoded eagerly from the
    cache when the text outgrows the largest compiled cache."""
    from gritkit import GritLM
    from gritkit.model import compiled_decode

    eager = pipeline.model
    compiled = GritLM(eager.model, eager.tokenizer, eager.config, check_bidirectional=False, compile=True)
    fast = RagPipeline(compiled, pipeline.index)

    def both(mode, **options):  # each answer from its own prepared prompt: eager decoding extends its cache
        return [rag.generate(pipeline.prepare(QUESTION, mode, top_k=2), max_new_tokens=10, **options)
                for rag in (pipeline, fast)]

    for mode in ("doc_cache", "query_doc_cache", "rag_doc_first"):
        for options in ({}, {"min_new_tokens": 10}):  # gritkit's greedy loop; transformers' generate
            eager_answer, compiled_answer = both(mode, **options)
            assert compiled_answer == eager_answer, (mode, options)
    assert compiled.compiled_decode.compiled
    monkeypatch.setattr(compiled_decode, "CACHE_SIZES", (4,))
    eager_answer, compiled_answer = both("doc_cache")
    assert compiled_answer == eager_answer
