"""Self-retrieval: the loop reproduces the training layout token for token, splices doc caches at
their true positions, detects the marker the model writes, and respects the retrieval limit."""

from __future__ import annotations

import copy

import pytest
import torch

from gritkit.model.formats import RETRIEVAL_MARKER
from gritkit.rag import RagIndex, RagPipeline
from gritkit.model.formats import turn_strings

QUESTION = "How do I parse a JSON document?"
NEW = 24


@pytest.fixture(scope="module")
def documents(corpus):
    return corpus[:16]


@pytest.fixture(scope="module")
def text_pipeline(tiny_llama, documents):
    return RagPipeline(tiny_llama, RagIndex.build(tiny_llama, documents))


@pytest.fixture(scope="module", params=["bidirectional", "causal"])
def cached_pipeline(request, tiny_llama, documents, tmp_path_factory):
    """Doc caches stored in float32 (so the stored cache is the pass's own), bidirectional as GRIT
    makes them, or causal."""
    root = tmp_path_factory.mktemp("self-retrieval")
    index = RagIndex.build(tiny_llama, documents, cache_docs=True, cache_dir=root / "cache", cache_dtype="float32",
                           causal_cache=request.param == "causal")
    return RagPipeline(tiny_llama, index), request.param == "bidirectional"


def _block_logits(grit, before: list[int], document: list[int], after: list[int], bidirectional: bool):
    """Logits of one forward pass over before + document + after, written as an additive mask (which
    eager and SDPA attention both take): the document attends to itself only (as its embedding pass
    did), everything else causally to all before it."""
    a, b = len(before), len(before) + len(document)
    width = b + len(after)
    rows = torch.arange(width)
    allowed = rows[None, :] <= rows[:, None]
    allowed[a:b] = False
    allowed[a:b, a:b] = True if bidirectional else rows[a:b, None] >= rows[None, a:b]
    mask = torch.zeros((1, 1, width, width)).masked_fill(~allowed, torch.finfo(torch.float32).min)
    with torch.inference_mode():
        out = grit.model(input_ids=torch.tensor([before + document + after]), attention_mask=mask,
                         position_ids=rows[None])
    return out.logits[0]


def _greedy(grit, ids: list[int], new: int) -> list[int]:
    input_ids = torch.tensor([ids])
    with torch.inference_mode():
        out = grit.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                                  max_new_tokens=new, pad_token_id=grit.tokenizer.pad_token_id,
                                  eos_token_id=grit.tokenizer.eos_token_id)
    return out[0, len(ids):].tolist()


def _marker_ids(grit, marker=RETRIEVAL_MARKER):
    return grit.tokenizer(marker, add_special_tokens=False)["input_ids"]


def test_turn_strings_of_the_grit_and_chatml_templates(tokenizer):
    messages = [{"role": "user", "content": QUESTION}]
    grit = turn_strings(tokenizer, messages)
    assert (grit.close, grit.between, grit.tail) == ("</s>", "</s>\n<|user|>\n", "\n<|assistant|>\n")
    chatml = copy.deepcopy(tokenizer)
    chatml.chat_template = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
                            "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    strings = turn_strings(chatml, messages)
    assert strings.close == "<|im_end|>\n"
    assert strings.between == "<|im_end|>\n<|im_start|>user\n"
    assert strings.tail == "<|im_end|>\n<|im_start|>assistant\n"


def test_retrieving_as_text_is_the_training_layout_token_for_token(text_pipeline):
    grit = text_pipeline.model
    result = text_pipeline.chat(QUESTION, max_new_tokens=NEW, retrieve="always")
    assert [r.source for r in result.retrievals] == ["text"] and result.cached_tokens == 0
    assert result.notes and "no doc caches" in result.notes[0]
    document = result.retrievals[0].document
    # The chat the data builder trains on, rendered whole by the template and tokenised in one piece.
    layout = grit.tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": RETRIEVAL_MARKER},
         {"role": "user", "content": document.text}], tokenize=False, add_generation_prompt=True)
    layout_ids = grit.tokenizer(layout, add_special_tokens=False)["input_ids"]
    marker = _marker_ids(grit)
    assert result.answer_token_ids[:len(marker)] == marker
    answer_ids = result.answer_token_ids[len(marker):]
    assert answer_ids == _greedy(grit, layout_ids, NEW - len(marker))[:len(answer_ids)]
    assert result.processed_tokens == len(layout_ids) + len(answer_ids) - 1  # the last token is never fed
    # The document is the one the pipeline's own query embedding ranks first.
    assert document.id == text_pipeline.prepare(QUESTION, "rag_doc_first", top_k=1).documents[0].id


def test_two_documents_as_text_join_like_the_rag_modes(text_pipeline):
    grit = text_pipeline.model
    result = text_pipeline.chat(QUESTION, max_new_tokens=NEW, retrieve="always", top_k=2)
    docs = [r.document for r in result.retrievals]
    assert len(docs) == 2 and docs[0].score >= docs[1].score
    layout = grit.tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": RETRIEVAL_MARKER},
         {"role": "user", "content": docs[0].text + "\n\n" + docs[1].text}], tokenize=False, add_generation_prompt=True)
    answer_ids = result.answer_token_ids[len(_marker_ids(grit)):]
    expected = _greedy(grit, grit.tokenizer(layout, add_special_tokens=False)["input_ids"], len(answer_ids))
    assert answer_ids == expected[:len(answer_ids)]


def test_a_spliced_doc_cache_is_the_document_at_its_true_positions(cached_pipeline):
    """The doc cache is appended after prompt + marker + end of turn, keys re-rotated to those
    positions. Reference: one forward pass with the document confined to itself by the mask and
    true position ids; the answer must be its greedy tokens, with the same logits."""
    pipeline, bidirectional = cached_pipeline
    grit = pipeline.model
    marker = _marker_ids(grit)
    # The random model may end its answer at once; take the first question it answers at length.
    for question in (QUESTION, "Which function sorts a list?", "What does the json module do?", "How are files read?"):
        result = pipeline.chat(question, max_new_tokens=NEW, retrieve="always")
        if len(result.answer_token_ids) >= len(marker) + 4:
            break
    assert [r.source for r in result.retrievals] == ["doc_cache"] and not result.notes
    segment = pipeline.retriever.doc_segment(result.retrievals[0].document.id)
    assert result.cached_tokens == len(segment)
    strings = turn_strings(grit.tokenizer, [{"role": "user", "content": question}])
    ids = lambda text: grit.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    answer_ids = result.answer_token_ids[len(marker):]
    assert len(answer_ids) >= 4
    before = grit.chat_input_ids(question) + marker + ids(strings.close)
    after = ids(strings.tail) + answer_ids[:-1]
    logits = _block_logits(grit, before, segment.token_ids, after, bidirectional)
    answer_logits = logits[-len(answer_ids):]
    assert answer_logits.argmax(-1).tolist() == answer_ids


def test_never_is_plain_generation(text_pipeline):
    grit = text_pipeline.model
    result = text_pipeline.chat(QUESTION, max_new_tokens=NEW, retrieve="never")
    assert result.retrievals == [] and result.cached_tokens == 0
    expected = _greedy(grit, grit.chat_input_ids(QUESTION), NEW)
    if expected[0] != _marker_ids(grit)[0]:
        assert result.answer_token_ids == expected[:len(result.answer_token_ids)]


def test_the_marker_the_model_writes_triggers_retrieval_and_the_limit_bans_it(text_pipeline):
    """The random model's own first greedy tokens serve as the marker: ``auto`` must see them and
    retrieve exactly as ``always`` does; with no retrievals left their first token is never chosen."""
    grit = text_pipeline.model
    plain = _greedy(grit, grit.chat_input_ids(QUESTION), 4)
    marker = grit.tokenizer.decode(plain[:2], skip_special_tokens=True)
    assert grit.tokenizer(marker, add_special_tokens=False)["input_ids"] == plain[:2], "pick a marker that round-trips"
    auto = text_pipeline.chat(QUESTION, max_new_tokens=NEW, marker=marker)
    always = text_pipeline.chat(QUESTION, max_new_tokens=NEW, marker=marker, retrieve="always")
    assert len(auto.retrievals) == 1 and auto.retrievals[0].at_token == 0
    assert auto.answer_token_ids == always.answer_token_ids and auto.answer == always.answer
    assert marker not in auto.answer
    banned = text_pipeline.chat(QUESTION, max_new_tokens=NEW, marker=marker, max_retrievals=0)
    assert banned.retrievals == [] and banned.answer_token_ids[0] != plain[0]


def test_bad_arguments_are_refused(text_pipeline):
    with pytest.raises(ValueError, match="no doc caches"):
        text_pipeline.chat(QUESTION, doc_cache=True)
    with pytest.raises(ValueError, match="retrieve must be"):
        text_pipeline.chat(QUESTION, retrieve="sometimes")
    with pytest.raises(ValueError, match="ending with a user message"):
        text_pipeline.chat([{"role": "assistant", "content": "hi"}])


def test_a_model_whose_keys_cannot_move_reads_documents_as_text(tokenizer, documents):
    from gritkit.rag.cache_pool import DocCachePool
    from gritkit.rag.kv import UnsupportedModelError
    from gritkit.model.tiny import build_tiny_model

    gpt2 = build_tiny_model("gpt2", tokenizer, hidden_size=32, num_layers=1)
    pipeline = RagPipeline(gpt2, RagIndex.build(gpt2, documents), doc_cache_pool=DocCachePool(1 << 20))
    result = pipeline.chat(QUESTION, max_new_tokens=NEW, retrieve="always")
    assert [r.source for r in result.retrievals] == ["text"] and "'gpt2'" in result.notes[0]
    with pytest.raises(UnsupportedModelError):
        pipeline.chat(QUESTION, max_new_tokens=NEW, retrieve="always", doc_cache=True)
