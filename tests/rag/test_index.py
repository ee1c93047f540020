"""The exact index, the on-disk doc caches, loading by recorded model, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gritkit.cli import main
from gritkit.rag import RagIndex, RagPipeline, embed_with_cache


@pytest.fixture(scope="module")
def documents(corpus):
    return corpus[100:130]


@pytest.fixture(scope="module")
def saved(tiny_llama, tiny_llama_dir, documents, tmp_path_factory):
    root = tmp_path_factory.mktemp("rag-index")
    index = RagIndex.build(tiny_llama, documents, model_path=tiny_llama_dir, cache_docs=True,
                           cache_dir=root / "cache", cache_dtype="float16", embedding_dtype="float16")
    return index.save(root / "index")


def test_search_is_exact_cosine_top_k(tiny_llama, documents):
    index = RagIndex.build(tiny_llama, documents)
    queries = tiny_llama.encode(["how to open a socket", "format a date"], convert_to_tensor=True)
    docs = tiny_llama.encode_document(documents, convert_to_tensor=True)
    torch.testing.assert_close(torch.from_numpy(index.embeddings), docs, atol=1e-5, rtol=1e-4)
    scores, ids = index.search(queries, top_k=5)
    expected = torch.topk(queries @ docs.T, 5, dim=1)
    assert ids.tolist() == expected.indices.tolist()
    torch.testing.assert_close(scores, expected.values, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="dimension"):
        index.search(torch.ones(3), top_k=1)


def test_saved_index_round_trip(saved, tiny_llama, tiny_llama_dir, documents):
    index = RagIndex.load(saved)
    assert index.documents == documents
    assert index.embeddings.dtype == np.float16
    assert index.settings["model"] == str(tiny_llama_dir.resolve())
    # Stored doc caches are the embedding pass's keys/values, rounded to float16.
    _, segments = embed_with_cache(tiny_llama, [documents[7]])
    stored = index.doc_caches[7]
    assert stored.token_ids == segments[0].token_ids
    torch.testing.assert_close(stored.keys.float(), segments[0].keys, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(stored.values.float(), segments[0].values, atol=2e-3, rtol=2e-3)
    config = tiny_llama.model.config
    head_dim = config.hidden_size // config.num_attention_heads
    assert index.doc_caches.bytes_per_token == config.num_hidden_layers * 2 * config.num_key_value_heads * head_dim * 2


def test_doc_cache_read_in_model_dtype_is_the_stored_cache(saved, tiny_llama):
    """The pipeline's read (converted while read, no copies after) holds exactly the stored
    float16 values, at the same positions, as a cache built the plain way with update()."""
    from transformers import DynamicCache

    from gritkit.rag import concatenate_segments

    store = RagIndex.load(saved).doc_caches
    stored, converted = store[3], store.segment(3, torch.float32)
    assert converted.keys.dtype == converted.values.dtype == torch.float32
    assert torch.equal(converted.keys, stored.keys.float()) and torch.equal(converted.values, stored.values.float())
    cache, ids = concatenate_segments(tiny_llama.model, [converted])
    plain = DynamicCache(config=tiny_llama.model.config)
    for layer in range(stored.keys.shape[0]):
        plain.update(stored.keys[layer][None].float(), stored.values[layer][None].float(), layer)
    assert ids == stored.token_ids and cache.get_seq_length() == plain.get_seq_length() == len(stored)
    for mine, theirs in zip(cache.layers, plain.layers):
        assert torch.equal(mine.keys, theirs.keys) and torch.equal(mine.values, theirs.values)
    tail = torch.tensor([tiny_llama.tokenizer("\n<|user|>\nhi\n<|assistant|>\n", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(tiny_llama.model(input_ids=tail, cache=cache).logits,
                           tiny_llama.model(input_ids=tail, cache=plain).logits)


def test_pipeline_loads_the_recorded_model(saved, tiny_llama):
    loaded = RagPipeline.load(saved)  # model directory read from index.json
    in_memory = RagPipeline(tiny_llama, RagIndex.load(saved))
    a = loaded.ask("socket timeout", mode="doc_query_cache", top_k=2, max_new_tokens=5)
    b = in_memory.ask("socket timeout", mode="doc_query_cache", top_k=2, max_new_tokens=5)
    assert a.answer_token_ids == b.answer_token_ids
    assert [d.id for d in a.documents] == [d.id for d in b.documents]


def test_index_refuses_another_model(saved, tokenizer):
    from gritkit.model.tiny import build_tiny_model

    other = build_tiny_model("llama", tokenizer, hidden_size=32, num_layers=2)
    with pytest.raises(ValueError, match="made by a model"):
        RagPipeline.load(saved, model=other)


def test_cli_index_and_ask(tiny_llama, tiny_llama_dir, documents, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(documents) + "\n")
    out = tmp_path / "idx"
    assert main(["rag", "index", "--model", str(tiny_llama_dir), "--corpus", str(corpus), "--out", str(out),
                 "--cache-docs", "--cache-dtype", "float32"]) == 0
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary leftovers
    # no --query-instruction: questions are embedded after the model's default one at ask time
    assert json.loads((out / "index.json").read_text())["query_instruction"] is None
    capsys.readouterr()
    assert main(["rag", "ask", "--index", str(out), "parse a json file", "--mode", "doc-cache", "--top-k", "2",
                 "--max-new-tokens", "4", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = RagPipeline(tiny_llama, RagIndex.load(out)).ask("parse a json file", mode="doc_cache", top_k=2,
                                                               max_new_tokens=4)
    assert printed["answer_token_ids"] == expected.answer_token_ids
    assert [d["id"] for d in printed["documents"]] == [d.id for d in expected.documents]
    assert main(["rag", "ask", "--index", str(tmp_path / "missing"), "q"]) == 2
    for extra, doc_cache in ((["--retrieve", "always"], None), (["--retrieve", "always", "--text"], False)):
        assert main(["rag", "chat", "--index", str(out), "parse a json file", "--max-new-tokens", "14", "--json",
                     *extra]) == 0
        printed = json.loads(capsys.readouterr().out)
        expected = RagPipeline(tiny_llama, RagIndex.load(out)).chat("parse a json file", max_new_tokens=14,
                                                                    retrieve="always", doc_cache=doc_cache)
        assert printed["answer_token_ids"] == expected.answer_token_ids
        assert [(r["document"]["id"], r["source"]) for r in printed["retrievals"]] == [
            (r.document.id, r.source) for r in expected.retrievals]
        assert printed["retrievals"][0]["source"] == ("text" if "--text" in extra else "doc_cache")


def test_index_records_the_model_config_and_refuses_a_model_that_embeds_otherwise(tiny_llama, saved):
    from gritkit import GritLM

    recorded = json.loads((saved / "index.json").read_text())["grit_config"]
    assert recorded == tiny_llama.config.to_dict()
    pipeline = RagPipeline.load(saved)  # the recorded model directory: the same config
    assert pipeline.model.config == tiny_llama.config
    for changes, named in [({"pooling": "last_token"}, "pooling: index 'mean' vs model 'last_token'"),
                           ({"attention": "causal"}, "attention"),
                           ({"query_instruction": "Find it"}, "query_instruction")]:
        with pytest.raises(ValueError, match=named):
            RagPipeline(tiny_llama.with_config(**changes), RagIndex.load(saved))
    with pytest.raises(ValueError, match="another GRIT configuration"):
        RagPipeline.load(saved, model=tiny_llama.with_config(pooling="cls"))
    assert isinstance(GritLM.from_pretrained(pipeline.index.settings["model"]), GritLM)


def test_index_of_an_older_version_asks_to_be_rebuilt(saved, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(saved, old)
    settings = json.loads((old / "index.json").read_text())
    settings["version"] = 1
    (old / "index.json").write_text(json.dumps(settings))
    with pytest.raises(ValueError, match="version 1, expected 2; rebuild it"):
        RagIndex.load(old)


def test_an_index_built_from_a_model_name_records_the_name(tiny_llama, tmp_path):
    index = RagIndex.build(tiny_llama, ["one document", "another document"], model_path="gritkit-tiny")
    assert index.settings["model"] == "gritkit-tiny"  # not a path under the working directory
    index.save(tmp_path / "idx")
    with pytest.raises(FileNotFoundError, match="model no-such-model .recorded in .*index.json. not found"):
        RagIndex.build(tiny_llama, ["x"], model_path="no-such-model").save(tmp_path / "bad")
        RagPipeline.load(tmp_path / "bad")
