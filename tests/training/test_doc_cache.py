"""The doc-cache reading objective trains what doc caching computes at inference, exactly."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from gritkit.training.data import DataError
from gritkit.training.doc_cache import DocCacheExample, doc_cache_example, doc_cache_sample, read_doc_cache_file, tokenize_doc_cache_files
from gritkit.training.backward import StepSettings
from gritkit.training.packed_backward import generative_backward_packed, packed_lm_terms
from gritkit.model.packing import pack, packed_forward
from gritkit.rag.kv import concatenate_segments, embed_with_cache
from gritkit.model.tiny import build_tiny_model

EXAMPLES = [
    DocCacheExample("The copy module makes shallow and deep copies of objects.",
                    "How do I copy an object?\n\nAnswer the prior query", "Use the copy module."),
    DocCacheExample("shutil.copytree copies a directory tree, keeping the file permissions.",
                    "Copy a directory?", "shutil.copytree copies the whole tree."),
    DocCacheExample("Sorting uses Timsort, which is stable.", "Is sort stable?", "Yes, it is stable."),
]


def _model(tokenizer, architecture, attention="bidirectional"):
    from gritkit.model.config import GritConfig

    return build_tiny_model(architecture, tokenizer, config=GritConfig(attention=attention), hidden_size=64,
                            num_layers=2, initializer_range=0.2)


def _inference_loss(grit, example: DocCacheExample, max_length: int) -> torch.Tensor:
    """Summed answer loss read through the RAG path: the embedding pass's cache, then the chat turn."""
    tokenizer = grit.tokenizer
    _, segments = embed_with_cache(grit, [example.document], "", max_length)
    cache, cached_ids = concatenate_segments(grit.model, segments)
    turn = tokenizer(grit.format.continuation(example.user), add_special_tokens=False)["input_ids"]
    answer = tokenizer(example.answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    tail = torch.tensor([turn + answer])
    with torch.no_grad():
        logits = grit.model(input_ids=tail, cache=cache, use_cache=True,
                            attention_mask=torch.ones(1, len(cached_ids) + tail.shape[1], dtype=torch.long)).logits
    predicting = logits[0, len(turn) - 1: -1]
    return F.cross_entropy(predicting.float(), torch.tensor(answer), reduction="sum")


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
@pytest.mark.parametrize("max_length", [64, 9])  # 9 cuts every document, as the index cuts it
def test_training_loss_equals_the_loss_read_from_the_doc_cache(tokenizer, architecture, max_length):
    grit = _model(tokenizer, architecture)
    for example in EXAMPLES:
        ids, mask, prefix, _, _ = doc_cache_sample(grit, example, max_length, 128)
        _, segments = embed_with_cache(grit, [example.document], "", max_length)
        assert ids[:prefix] == segments[0].token_ids  # the document tokens are the cached ones
        batch = pack([(ids, mask)], tokenizer.pad_token_id, len(ids), prefixes=[prefix])
        with torch.no_grad():
            logits = packed_forward(grit.model, grit.model.config, batch).logits
        trained = packed_lm_terms(logits, batch, torch.ones(1), None)
        torch.testing.assert_close(trained, _inference_loss(grit, example, max_length), rtol=1e-5, atol=1e-4)


def test_without_the_prefix_the_loss_is_that_of_a_causal_document(tokenizer):
    """The prefix is what makes the objective differ from a plain chat: without it the loss changes."""
    grit = _model(tokenizer, "llama")
    ids, mask, prefix, _, _ = doc_cache_sample(grit, EXAMPLES[0], 64, 128)
    losses = []
    for prefixes in ([prefix], [0]):
        batch = pack([(ids, mask)], tokenizer.pad_token_id, len(ids), prefixes=prefixes)
        with torch.no_grad():
            losses.append(packed_lm_terms(packed_forward(grit.model, grit.model.config, batch).logits, batch,
                                          torch.ones(1), None))
    assert not torch.allclose(losses[0], losses[1], atol=1e-4)


def test_a_causally_embedding_model_gets_no_bidirectional_prefix(tokenizer):
    grit = _model(tokenizer, "llama", attention="causal")
    assert doc_cache_sample(grit, EXAMPLES[0], 64, 128)[2] == 0


def test_packed_samples_give_the_gradient_of_each_alone(tokenizer):
    """Several samples share rows; gradient and loss equal one sample per pass, summed."""
    grit = _model(tokenizer, "llama")
    samples = [doc_cache_sample(grit, e, 64, 128) for e in EXAMPLES]
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
    long_answer = DocCacheExample("doc", "q", " ".join(["word"] * 60))
    files = [("a.jsonl", [EXAMPLES[0], EXAMPLES[1]]), ("b.jsonl", [long_answer])]
    turn = len(tokenizer(grit.format.continuation("q"), add_special_tokens=False)["input_ids"])
    answer = len(tokenizer(long_answer.answer, add_special_tokens=False)["input_ids"]) + 1
    fitted = tokenize_doc_cache_files(grit, files, 8, turn + answer - 3)  # 3 answer tokens over
    assert fitted.counts["a.jsonl"] == dict(examples=2, kept=2, documents_cut=2, answers_cut=0, dropped=0)
    assert fitted.counts["b.jsonl"] == dict(examples=1, kept=1, documents_cut=0, answers_cut=1, dropped=0)
    ids, mask = fitted.items[-1]
    assert len(ids) == fitted.prefixes[-1] + turn + answer - 3 and sum(mask) == answer - 3
    dropped = tokenize_doc_cache_files(grit, files[1:], 8, turn + answer // 2 - 1)
    assert dropped.counts["b.jsonl"]["dropped"] == 1 and not dropped.items


@pytest.mark.parametrize("record, message", [
    ({"document": "d"}, "exactly the keys"),
    ({"document": "", "messages": []}, "document must be a non-empty string"),
    ({"document": "d", "messages": [{"role": "user", "content": "q"}]}, "one user turn then one assistant turn"),
    ({"document": "d", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]},
     "answer is empty"),
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
