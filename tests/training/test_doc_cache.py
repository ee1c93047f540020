"""The doc-cache reading objective trains what doc caching computes at inference, exactly, with one
document's cache or several concatenated."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from gritkit.training.data import DataError
from gritkit.training.doc_cache import (DocCacheExample, doc_cache_example, doc_cache_sample, read_doc_cache_file,
                                        tokenize_doc_cache_files)
from gritkit.training.backward import StepSettings
from gritkit.training.packed_backward import generative_backward_packed, packed_lm_terms
from gritkit.model.packing import Blocks, pack, packed_forward
from gritkit.rag.kv import concatenate_segments, embed_with_cache
from gritkit.model.tiny import build_tiny_model
from gritkit.model.formats import RETRIEVAL_MARKER, turn_strings
from gritkit.rag.self_retrieval import _Decoder

DOCUMENTS = ["The copy module makes shallow and deep copies of objects.",
             "shutil.copytree copies a directory tree, keeping the file permissions.",
             "Sorting uses Timsort, which is stable."]
EXAMPLES = [
    DocCacheExample((DOCUMENTS[0],), "How do I copy an object?\n\nAnswer the prior query", "Use the copy module."),
    DocCacheExample((DOCUMENTS[1],), "Copy a directory?", "shutil.copytree copies the whole tree."),
    DocCacheExample((DOCUMENTS[2],), "Is sort stable?", "Yes, it is stable."),
]
# The answer's document at another rank among distractors each time, as retrieval returns them.
MULTI_DOCUMENT_EXAMPLES = [
    DocCacheExample((DOCUMENTS[2], DOCUMENTS[1]), "Copy a directory?", "shutil.copytree copies the whole tree."),
    DocCacheExample((DOCUMENTS[1], DOCUMENTS[2], DOCUMENTS[0]), "How do I copy an object?", "Use the copy module."),
    DocCacheExample((DOCUMENTS[2], DOCUMENTS[0], DOCUMENTS[1]), "Is sort stable?", "Yes, it is stable."),
]


def _model(tokenizer, architecture, attention="bidirectional"):
    from gritkit.model.config import GritConfig

    return build_tiny_model(architecture, tokenizer, config=GritConfig(attention=attention), hidden_size=64,
                            num_layers=2, initializer_range=0.2)


def _inference_loss(grit, example: DocCacheExample, max_length: int) -> torch.Tensor:
    """Summed answer loss read through the RAG path: each document's embedding pass as the index
    makes it, the caches concatenated at their true positions, then the chat turn."""
    tokenizer = grit.tokenizer
    _, segments = embed_with_cache(grit, list(example.documents), "", max_length)
    cache, cached_ids = concatenate_segments(grit.model, segments)
    turn = tokenizer(grit.format.continuation(example.user), add_special_tokens=False)["input_ids"]
    answer = tokenizer(example.answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    tail = torch.tensor([turn + answer])
    with torch.no_grad():
        logits = grit.model(input_ids=tail, cache=cache, use_cache=True,
                            attention_mask=torch.ones(1, len(cached_ids) + tail.shape[1], dtype=torch.long)).logits
    predicting = logits[0, len(turn) - 1: -1]
    return F.cross_entropy(predicting.float(), torch.tensor(answer), reduction="sum")


def _packed_loss(grit, ids, mask, blocks) -> torch.Tensor:
    """Summed answer loss of one sample by the training pass: packed, its documents as blocks."""
    batch = pack([(ids, mask)], grit.tokenizer.pad_token_id, len(ids), prefixes=[blocks])
    with torch.no_grad():
        logits = packed_forward(grit.model, grit.model.config, batch).logits
    return packed_lm_terms(logits, batch, torch.ones(1), None)


def _check_against_inference(grit, examples, max_length):
    for example in examples:
        ids, mask, blocks, _, _ = doc_cache_sample(grit, example, max_length, 128)
        _, segments = embed_with_cache(grit, list(example.documents), "", max_length)
        assert blocks.lengths == tuple(len(s) for s in segments)
        assert ids[:sum(blocks.lengths)] == [t for s in segments for t in s.token_ids]  # the cached tokens
        torch.testing.assert_close(_packed_loss(grit, ids, mask, blocks), _inference_loss(grit, example, max_length),
                                   rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
@pytest.mark.parametrize("max_length", [64, 9])  # 9 cuts every document, as the index cuts it
def test_training_loss_equals_the_loss_read_from_the_doc_cache(tokenizer, architecture, max_length):
    _check_against_inference(_model(tokenizer, architecture), EXAMPLES, max_length)


@pytest.mark.parametrize("architecture, attention", [("llama", "bidirectional"), ("qwen2", "bidirectional"),
                                                     ("llama", "causal")])
@pytest.mark.parametrize("max_length", [64, 9])
def test_training_loss_equals_the_loss_read_from_concatenated_doc_caches(tokenizer, architecture, attention,
                                                                          max_length):
    """2 and 3 documents, each embedded alone, re-rotated after the ones before it (concatenate_segments)."""
    _check_against_inference(_model(tokenizer, architecture, attention), MULTI_DOCUMENT_EXAMPLES, max_length)


# Caches spliced mid-answer, as the self-retrieval loop does: the marker, then the documents.
MID_ANSWER_EXAMPLES = [
    DocCacheExample((DOCUMENTS[1],), "Copy a directory?", "shutil.copytree copies the whole tree.", RETRIEVAL_MARKER),
    DocCacheExample((DOCUMENTS[2], DOCUMENTS[0]), "How do I copy an object?", "Use the copy module.",
                    "Let me look." + RETRIEVAL_MARKER),
]


def _self_retrieval_loss(grit, example: DocCacheExample, max_length: int) -> torch.Tensor:
    """Summed loss of the answer's opening and rest, read token by token through the self-retrieval
    loop's own decoder: the prompt, the opening, the marker's last token with the end of the turn,
    each document's cache spliced at the cache's end, the next turn's opening, then the answer."""
    tokenizer = grit.tokenizer
    ids_of = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    messages = [{"role": "user", "content": example.user}]
    strings = turn_strings(tokenizer, messages)
    opening, answer = ids_of(example.opening), ids_of(example.answer) + [tokenizer.eos_token_id]
    decoder, total = _Decoder(grit, 0.0, 1.0, None), torch.zeros(())
    logits = decoder.feed(grit.chat_input_ids(messages))
    for token in opening[:-1]:
        total += F.cross_entropy(logits[None], torch.tensor([token]), reduction="sum")
        logits = decoder.feed([token])
    total += F.cross_entropy(logits[None], torch.tensor([opening[-1]]), reduction="sum")
    decoder.feed([opening[-1]] + ids_of(strings.close))
    _, segments = embed_with_cache(grit, list(example.documents), "", max_length)
    for segment in segments:
        decoder.splice(segment)
    logits = decoder.feed(ids_of(strings.tail))
    for token in answer:
        total += F.cross_entropy(logits[None], torch.tensor([token]), reduction="sum")
        logits = decoder.feed([token])
    return total


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
@pytest.mark.parametrize("max_length", [64, 9])
def test_mid_answer_training_loss_equals_the_self_retrieval_loop(tokenizer, architecture, max_length):
    grit = _model(tokenizer, architecture)
    for example in MID_ANSWER_EXAMPLES:
        ids, mask, blocks, _, _ = doc_cache_sample(grit, example, max_length, 128)
        _, segments = embed_with_cache(grit, list(example.documents), "", max_length)
        assert blocks.start > 0 and blocks.lengths == tuple(len(s) for s in segments)
        assert ids[blocks.start: blocks.end] == [t for s in segments for t in s.token_ids]
        torch.testing.assert_close(_packed_loss(grit, ids, mask, blocks), _self_retrieval_loss(grit, example, max_length),
                                   rtol=1e-5, atol=1e-4)


def test_a_mid_answer_line_is_read_and_its_documents_isolated(tokenizer):
    grit = _model(tokenizer, "llama")
    example = MID_ANSWER_EXAMPLES[1]
    record = {"documents": list(example.documents), "messages": [
        {"role": "user", "content": example.user}, {"role": "assistant", "content": example.opening},
        {"role": "assistant", "content": example.answer}]}
    assert doc_cache_example(record, "f.jsonl:1") == example
    ids, mask, blocks, _, _ = doc_cache_sample(grit, example, 64, 128)
    assert sum(mask) == len(tokenizer(example.opening, add_special_tokens=False)["input_ids"]) + len(
        tokenizer(example.answer, add_special_tokens=False)["input_ids"]) + 1
    # Read as causal text after the prompt (no blocks), the same tokens give another loss.
    assert not torch.allclose(_packed_loss(grit, ids, mask, blocks), _packed_loss(grit, ids, mask, Blocks()), atol=1e-4)


def test_documents_that_saw_each_other_would_give_another_loss(tokenizer):
    """Isolating the blocks matters: one bidirectional prefix over all documents reads differently."""
    grit = _model(tokenizer, "llama")
    ids, mask, blocks, _, _ = doc_cache_sample(grit, MULTI_DOCUMENT_EXAMPLES[1], 64, 128)
    joined = Blocks((sum(blocks.lengths),))
    assert not torch.allclose(_packed_loss(grit, ids, mask, blocks), _packed_loss(grit, ids, mask, joined), atol=1e-4)


def _prefix_lm_mask(length, prefix) -> torch.Tensor:
    """A prefix-LM mask written out by hand: how one document was trained before several could be."""
    allowed = torch.ones(length, length, dtype=torch.bool).tril()
    allowed[:prefix, :prefix] = True
    return allowed


def test_one_document_in_the_new_form_is_the_old_sample(tokenizer):
    grit = _model(tokenizer, "llama")
    messages = [{"role": "user", "content": EXAMPLES[0].user}, {"role": "assistant", "content": EXAMPLES[0].answer}]
    old = doc_cache_example({"document": DOCUMENTS[0], "messages": messages}, "f.jsonl:1")
    new = doc_cache_example({"documents": [DOCUMENTS[0]], "messages": messages}, "f.jsonl:2")
    assert old == new == EXAMPLES[0]
    ids, mask, blocks, _, _ = doc_cache_sample(grit, new, 64, 128)
    assert doc_cache_sample(grit, old, 64, 128) == (ids, mask, blocks, 0, False)
    assert torch.equal(_packed_loss(grit, ids, mask, blocks), _packed_loss(grit, *doc_cache_sample(grit, old, 64, 128)[:3]))
    batch = pack([(ids, mask)], tokenizer.pad_token_id, len(ids), prefixes=[blocks])
    assert torch.equal(batch.attention_mask("sdpa", torch.float32)[0, 0], _prefix_lm_mask(len(ids), blocks.lengths[0]))


def test_without_the_prefix_the_loss_is_that_of_a_causal_document(tokenizer):
    """The prefix is what makes the objective differ from a plain chat: without it the loss changes."""
    grit = _model(tokenizer, "llama")
    ids, mask, blocks, _, _ = doc_cache_sample(grit, EXAMPLES[0], 64, 128)
    assert not torch.allclose(_packed_loss(grit, ids, mask, blocks), _packed_loss(grit, ids, mask, Blocks()), atol=1e-4)


def test_a_causally_embedding_model_gets_causal_blocks(tokenizer):
    grit = _model(tokenizer, "llama", attention="causal")
    assert not doc_cache_sample(grit, MULTI_DOCUMENT_EXAMPLES[0], 64, 128)[2].bidirectional


def test_packed_samples_give_the_gradient_of_each_alone(tokenizer):
    """Several samples share rows; gradient and loss equal one sample per pass, summed."""
    grit = _model(tokenizer, "llama")
    samples = [doc_cache_sample(grit, e, 64, 128) for e in EXAMPLES + MULTI_DOCUMENT_EXAMPLES]
    items, prefixes = [(s[0], s[1]) for s in samples], [s[2] for s in samples]
    settings = StepSettings(pad_id=tokenizer.pad_token_id, micro_batch_size=8, aggregation="token", rows_per_pass=1)
    gradients, losses = [], []
    for capacity in (sum(len(i) for i, _ in items), max(len(i) for i, _ in items)):  # one row, then one each
        grit.model.zero_grad()
        losses.append(generative_backward_packed(grit.model, items, settings, capacity=capacity, prefixes=prefixes))
        gradients.append({n: p.grad.clone() for n, p in grit.model.named_parameters() if p.grad is not None})
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for name, grad in gradients[0].items():
        torch.testing.assert_close(grad, gradients[1][name], rtol=1e-4, atol=1e-6, msg=name)


def test_lengths_are_fitted_and_counted(tokenizer):
    grit = _model(tokenizer, "llama")
    long_answer = DocCacheExample(("doc",), "q", " ".join(["word"] * 60))
    files = [("a.jsonl", [EXAMPLES[0], EXAMPLES[1]]), ("b.jsonl", [long_answer]), ("c.jsonl", MULTI_DOCUMENT_EXAMPLES)]
    turn = len(tokenizer(grit.format.continuation("q"), add_special_tokens=False)["input_ids"])
    answer = len(tokenizer(long_answer.answer, add_special_tokens=False)["input_ids"]) + 1
    fitted = tokenize_doc_cache_files(grit, files, 8, turn + answer - 3)  # 3 answer tokens over
    assert fitted.counts["a.jsonl"] == dict(examples=2, kept=2, documents_cut=2, answers_cut=0, dropped=0)
    assert fitted.counts["b.jsonl"] == dict(examples=1, kept=1, documents_cut=0, answers_cut=1, dropped=0)
    assert fitted.counts["c.jsonl"] == dict(examples=3, kept=3, documents_cut=8, answers_cut=0, dropped=0)  # each cut
    assert [blocks.lengths for blocks in fitted.prefixes[3:]] == [(8, 8), (8, 8, 8), (8, 8, 8)]
    ids, mask = fitted.items[2]
    assert len(ids) == sum(fitted.prefixes[2].lengths) + turn + answer - 3 and sum(mask) == answer - 3
    dropped = tokenize_doc_cache_files(grit, files[1:2], 8, turn + answer // 2 - 1)
    assert dropped.counts["b.jsonl"]["dropped"] == 1 and not dropped.items


@pytest.mark.parametrize("record, message", [
    ({"document": "d"}, "exactly the keys"),
    ({"document": "d", "documents": ["d"], "messages": []}, "exactly the keys"),
    ({"document": "", "messages": []}, "document must be a non-empty string"),
    ({"documents": [], "messages": []}, "documents must be a list of 1 to 4 non-empty strings"),
    ({"documents": ["a", "b", "c", "d", "e"], "messages": []}, "documents must be a list of 1 to 4"),
    ({"documents": ["a", " "], "messages": []}, "documents must be a list of 1 to 4"),
    ({"documents": "a", "messages": []}, "documents must be a list of 1 to 4"),
    ({"document": "d", "messages": [{"role": "user", "content": "q"}]}, "one user turn then one assistant turn"),
    ({"document": "d", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]},
     "assistant turn is empty"),
    ({"document": "d", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "},
                                    {"role": "assistant", "content": "a"}]}, "assistant turn is empty"),
    ({"document": "d", "messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "r"},
                                    {"role": "assistant", "content": "a"}]}, "user, assistant, assistant"),
    ({"document": "d", "messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]},
     "role and content"),
])
def test_malformed_lines_name_file_and_line(record, message, tmp_path):
    with pytest.raises(DataError, match=message):
        doc_cache_example(record, "f.jsonl:1")
    path = tmp_path / "bad.jsonl"
    good = {"document": "d", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path.write_text(json.dumps(good) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError, match=rf"bad.jsonl:2: .*{message}"):
        read_doc_cache_file(path)
