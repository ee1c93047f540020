"""The retriever: which instruction questions are embedded after, and that both the RAG modes and
the self-retrieval loop find documents through it."""

from __future__ import annotations

import json

import pytest
import torch

from gritkit.rag import RagIndex, RagPipeline, Retriever

QUESTION = "How do I parse a JSON document?"


@pytest.fixture(scope="module")
def documents(corpus):
    return corpus[400:416]


def test_without_a_query_instruction_questions_are_embedded_as_encode_query_does(tiny_llama, documents, tmp_path):
    index = RagIndex.build(tiny_llama, documents)
    assert index.settings["query_instruction"] is None
    saved = index.save(tmp_path / "idx")
    assert json.loads((saved / "index.json").read_text())["query_instruction"] is None
    retriever = Retriever(tiny_llama, RagIndex.load(saved))
    assert retriever.query_instruction == tiny_llama.config.default_query_instruction != ""
    vector, segment = retriever.embed_query(QUESTION)
    assert segment is None
    expected = tiny_llama.encode_query(QUESTION, convert_to_tensor=True)
    assert torch.equal(vector, expected)
    # the RAG modes and the self-retrieval loop retrieve with that vector
    _, ids = retriever.index.search(expected, top_k=2)
    pipeline = RagPipeline(tiny_llama, retriever.index)
    assert [d.id for d in pipeline.prepare(QUESTION, "rag_doc_first", top_k=2).documents] == ids[0].tolist()
    chat = pipeline.chat(QUESTION, max_new_tokens=16, retrieve="always")
    assert chat.retrievals[0].document.id == ids[0, 0]


@pytest.mark.parametrize("instruction", ["", "Find the Python documentation for"])
def test_an_explicit_query_instruction_is_recorded_and_used(tiny_llama, documents, tmp_path, instruction):
    saved = RagIndex.build(tiny_llama, documents, query_instruction=instruction).save(tmp_path / "idx")
    retriever = Retriever(tiny_llama, RagIndex.load(saved))
    assert retriever.index.settings["query_instruction"] == retriever.query_instruction == instruction
    vector, segment = retriever.embed_query(QUESTION, with_cache=True)
    assert torch.equal(vector, tiny_llama.encode(QUESTION, instruction=instruction, convert_to_tensor=True))
    assert segment.token_ids == tiny_llama.tokenize_for_embedding([QUESTION], [instruction])[0][0]


def test_search_leaves_out_the_missing_slots_of_an_approximate_search(tiny_llama, documents):
    class HalfFound:
        settings = {"backend": "half"}

        def search(self, queries, top_k):
            return torch.tensor([[0.9, 0.5]]), torch.tensor([[3, -1]])

    built = RagIndex.build(tiny_llama, documents)
    retriever = Retriever(tiny_llama, RagIndex(built.documents, built.embeddings, built.settings, search=HalfFound()))
    found = retriever.search(torch.zeros(tiny_llama.embedding_dim), top_k=2)
    assert [(d.id, d.score, d.text) for d in found] == [(3, pytest.approx(0.9), documents[3])]
