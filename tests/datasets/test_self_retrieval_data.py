"""`gritkit data self-retrieval`: labelled by construction, held out, and trained on the right tokens."""

from __future__ import annotations

import json

import pytest

from gritkit.cli import main
from gritkit.training.data import generative_example, tokenize_generative
from gritkit.datasets.common import read_json, read_jsonl
from gritkit.datasets.self_retrieval import SELF_RETRIEVAL_INSTRUCTION, build_self_retrieval, lead
from gritkit.model.formats import RETRIEVAL_MARKER


@pytest.fixture(scope="module")
def built(small_build, tmp_path_factory):
    out = tmp_path_factory.mktemp("self-retrieval")
    written = build_self_retrieval(small_build[0], out)
    return out, written


def test_lead_keeps_whole_sentences_within_the_limit():
    assert lead("One two.  Three four!\nFive six?", 100) == "One two. Three four! Five six?"
    assert lead("One two. Three four! Five six?", 21) == "One two. Three four!"
    assert lead("a " * 200, 11) == "a a a a a"


def test_chats_are_labelled_by_construction(built):
    out, written = built
    chats = read_jsonl(out / "chats.jsonl")
    assert len(chats) == sum(written["chats"].values())
    retrieving = [c["messages"] for c in chats if len(c["messages"]) == 4]
    plain = [c["messages"] for c in chats if len(c["messages"]) == 2]
    assert len(retrieving) == written["chats"]["faq"] + written["chats"]["debian"] > 0
    assert len(plain) == len(chats) - len(retrieving) > 0
    for request, marker, document, answer in retrieving:
        assert marker == {"role": "assistant", "content": RETRIEVAL_MARKER}
        assert document["role"] == "user" and answer["role"] == "assistant"
        assert " ".join(document["content"].split()).startswith(answer["content"]) and answer["content"]
    assert all(RETRIEVAL_MARKER not in m["content"] for chat in plain for m in chat)
    pairs = read_jsonl(out / "contrastive.jsonl")
    assert len(pairs) == len(retrieving) == written["contrastive"]
    assert {p["query"][0] for p in pairs} == {SELF_RETRIEVAL_INSTRUCTION}
    documents = {chat[2]["content"] for chat in retrieving}
    assert all(p["pos"][0] in documents and p["neg"][0] != p["pos"][0] for p in pairs)


def test_evaluation_is_held_out_and_consistent(built):
    out, written = built
    evaluation = read_json(out / "eval.json")
    questions, corpus = evaluation["questions"], evaluation["corpus"]
    assert len(corpus) == written["eval_corpus"]
    assert {q["kind"] for q in questions} == {"faq", "debian", "wordnet", "debian-summary"}
    for q in questions:
        assert q["needs_document"] == (q["kind"] in ("faq", "debian"))
        assert (q["document"] in corpus) if q["needs_document"] else q["document"] is None
    trained_text = {m["content"] for c in read_jsonl(out / "chats.jsonl") for m in c["messages"]}
    assert not trained_text & {q["question"] for q in questions}, [(q["kind"], q["question"][:60]) for q in questions if q["question"] in trained_text]
    assert not trained_text & set(corpus.values())


def test_only_the_marker_turn_and_the_answer_are_trained_on(tokenizer, built):
    out, _ = built
    record = next(c for c in read_jsonl(out / "chats.jsonl") if len(c["messages"]) == 4)
    ids, trained, status = tokenize_generative(tokenizer, generative_example(record, "chat"), 4096)
    assert status == "kept"
    answer = record["messages"][3]["content"]
    eos = tokenizer.eos_token
    assert tokenizer.decode([i for i, t in zip(ids, trained) if t]) == f"{RETRIEVAL_MARKER}{eos}{answer}{eos}"


def test_the_command_writes_the_files_and_refuses_a_directory_that_is_not_a_build(small_build, tmp_path, capsys):
    assert main(["data", "self-retrieval", "--data", str(small_build[0]), "--out", str(tmp_path / "sr")]) == 0
    assert "held-out questions" in capsys.readouterr().out
    assert json.loads((tmp_path / "sr" / "eval.json").read_text())["marker"] == RETRIEVAL_MARKER
    with pytest.raises(FileNotFoundError, match="not the output of `gritkit data build`"):
        build_self_retrieval(tmp_path, tmp_path / "other")


def test_cached_lines_are_the_retrieving_chats_with_the_document_spliced_mid_answer(built):
    from gritkit.training.doc_cache import doc_cache_example

    out, written = built
    retrieving = {(c["messages"][0]["content"], c["messages"][2]["content"], c["messages"][3]["content"])
                  for c in read_jsonl(out / "chats.jsonl") if len(c["messages"]) == 4}
    examples = [doc_cache_example(line, f"doc_cache.jsonl:{n}") for n, line in enumerate(read_jsonl(out / "doc_cache.jsonl"), 1)]
    assert len(examples) == written["doc_cache"] == len(retrieving)
    assert {(e.user, e.documents[0], e.answer) for e in examples} == retrieving
    assert {e.opening for e in examples} == {RETRIEVAL_MARKER}
