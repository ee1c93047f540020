"""Contrastive and LM losses against hand computations; GradCache against the unchunked step."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from gritkit.training.losses import contrastive_loss, lm_loss_terms, lm_loss_units, lm_target_weights, trained_counts
from gritkit.training.backward import StepSettings, embedding_backward, generative_backward, plain_output_head


def test_contrastive_loss_matches_hand_computation():
    torch.manual_seed(0)
    q, d = torch.randn(3, 5), torch.randn(6, 5)  # group size 2: docs 0,2,4 are the positives
    tau = 0.05
    expected = 0.0
    for i in range(3):
        sims = [float(q[i] @ d[j] / (q[i].norm() * d[j].norm())) / tau for j in range(6)]
        expected += -(sims[2 * i] - math.log(sum(math.exp(s) for s in sims)))
    loss = contrastive_loss(q, d, temperature=tau, group_size=2)
    assert loss.item() == pytest.approx(expected / 3, rel=1e-5)


def test_matryoshka_loss_is_the_mean_of_the_loss_at_each_prefix():
    torch.manual_seed(2)
    q, d = torch.randn(3, 8), torch.randn(6, 8)
    by_size = [contrastive_loss(q[:, :s], d[:, :s], temperature=0.05, group_size=2).item() for s in (8, 4, 2)]
    loss = contrastive_loss(q, d, temperature=0.05, group_size=2, matryoshka_dims=[4, 2])
    assert loss.item() == pytest.approx(sum(by_size) / 3, rel=1e-6)
    assert by_size[1] != pytest.approx(by_size[0])  # the prefixes really are scored on their own
    for bad in ([8], [0], [9]):
        with pytest.raises(ValueError, match="matryoshka_dims must lie between 1 and the embedding size 8"):
            contrastive_loss(q, d, group_size=2, matryoshka_dims=bad)


def test_contrastive_loss_rejects_wrong_group():
    with pytest.raises(ValueError, match="need 6 documents"):
        contrastive_loss(torch.randn(3, 4), torch.randn(5, 4), group_size=2)


def _hand_token_losses(logits, ids, mask):
    """Per sample: list of (loss of predicting token t+1) for trained targets."""
    out = []
    for b in range(ids.shape[0]):
        row = []
        for t in range(ids.shape[1] - 1):
            if mask[b, t + 1]:
                logp = torch.log_softmax(logits[b, t], -1)
                row.append(-float(logp[ids[b, t + 1]]))
        out.append(row)
    return out


@pytest.mark.parametrize("aggregation", ["token", "sample", "mixed"])
def test_lm_loss_aggregations_match_hand_computation(aggregation):
    torch.manual_seed(1)
    logits, ids = torch.randn(4, 6, 11), torch.randint(0, 11, (4, 6))
    # the last sample has no trained target: it adds nothing, and no unit under "sample"
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0], [1, 0, 0, 0, 0, 0]])
    per = _hand_token_losses(logits, ids, mask)
    flat = [x for row in per for x in row]
    expected = {"token": (sum(flat), len(flat)), "sample": (sum(sum(r) / len(r) for r in per if r), 3),
                "mixed": (sum(flat) / len(flat), 1)}[aggregation]
    counts = trained_counts(mask)
    weights = lm_target_weights(counts, aggregation, micro_batch_size=4)
    assert lm_loss_terms(logits, ids, mask, weights).item() == pytest.approx(expected[0], rel=1e-5)
    assert lm_loss_units(counts, aggregation, micro_batch_size=4) == expected[1]


def test_mixed_weighting_takes_each_logical_micro_batchs_mean():
    """Two micro-batches of 2: each target weighs 1 / its micro-batch's targets; units are micro-batches."""
    counts = [3, 1, 0, 2]
    assert lm_target_weights(counts, "mixed", 2).tolist() == pytest.approx([1 / 4, 1 / 4, 1 / 2, 1 / 2])
    assert lm_loss_units(counts, "mixed", 2) == 2
    assert lm_loss_units([0, 0, 1], "mixed", 2) == 1
    assert lm_target_weights(counts, "sample", 2).tolist() == pytest.approx([1 / 3, 1, 1, 1 / 2])
    assert lm_loss_units(counts, "sample", 2) == 3


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.fixture()
def model_copy(tiny_llama):
    grit = copy.copy(tiny_llama)
    grit.model = copy.deepcopy(tiny_llama.model).train()
    return grit


def _embedding_items(grit):
    texts = ["a first query about files", "how to sort a list", "parse a date string", "join two paths",
             "open a socket to a host", "a regular expression search"]
    queries = grit.tokenize_for_embedding(texts, ["Find the function"] * len(texts), 32)
    docs = grit.tokenize_for_embedding([f"document {i} about {t}" for t in texts for i in range(2)],
                                       [""] * 2 * len(texts), 32)
    return queries, docs


@pytest.mark.parametrize("matryoshka_dims", [(), (32, 8)])
def test_gradcache_gradients_equal_unchunked(model_copy, matryoshka_dims):
    grit = model_copy
    queries, docs = _embedding_items(grit)
    results = []
    for chunk in (0, 2, 5):
        grit.model.zero_grad(set_to_none=True)
        settings = StepSettings(temperature=0.02, group_size=2, chunk_size=chunk, matryoshka_dims=matryoshka_dims)
        loss = embedding_backward(grit, queries, docs, settings, weight=0.7)
        results.append((loss, _grads(grit.model)))
    (loss0, g0), *chunked = results
    assert len(g0) > 0
    for loss, grads in chunked:
        assert loss == pytest.approx(loss0, rel=1e-6)
        for name, grad in g0.items():
            torch.testing.assert_close(grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_generative_accumulation_equals_one_batch(model_copy, tokenizer):
    """Micro-batches of 1 and 2 give the gradient of one batch of 4, for token-level loss."""
    grit = model_copy
    items = [(tokenizer(t)["input_ids"], [False] * 2 + [True] * 40) for t in
             ["Return the sum of two numbers.", "Split a path into its parts and return them",
              "Open a file", "Compute the median of the data points given"]]
    items = [(ids, mask[: len(ids)]) for ids, mask in items]
    results = []
    for micro in (4, 1, 3):
        grit.model.zero_grad(set_to_none=True)
        settings = StepSettings(pad_id=tokenizer.pad_token_id, micro_batch_size=micro, aggregation="token")
        loss = generative_backward(grit.model, items, settings)
        results.append((loss, _grads(grit.model)))
    (loss0, g0), *rest = results
    for loss, grads in rest:
        assert loss == pytest.approx(loss0, rel=1e-6)
        for name, grad in g0.items():
            torch.testing.assert_close(grads[name], grad, atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize("aggregation", ["token", "sample", "mixed"])
def test_lm_head_on_trained_positions_only_equals_full_logits(model_copy, tokenizer, aggregation):
    """The fast path (LM head only where a target is trained) gives the same loss and gradients."""
    grit = model_copy
    texts = ["Return the sum of two numbers.", "Open a file", "Split a path into its parts and return them"]
    items = [(ids, [i % 3 != 0 and i > 1 for i in range(len(ids))]) for ids in
             (tokenizer(t)["input_ids"] for t in texts)]
    empty = tokenizer("no target here")["input_ids"]
    items.append((empty, [False] * len(empty)))
    results = []
    for plain in (True, False):
        grit.model.zero_grad(set_to_none=True)
        settings = StepSettings(pad_id=tokenizer.pad_token_id, micro_batch_size=2, aggregation=aggregation,
                                head_at_targets=plain)
        loss = generative_backward(grit.model, items, settings)
        results.append((loss, _grads(grit.model)))
    (fast, g_fast), (full, g_full) = results
    assert fast == pytest.approx(full, rel=1e-6)
    assert set(g_fast) == set(g_full)
    for name, grad in g_full.items():
        torch.testing.assert_close(g_fast[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_post_processed_logits_keep_the_full_forward(tiny_llama):
    """The probe accepts a plain head and refuses one whose logits are soft-capped (Gemma 2)."""
    from transformers import AutoModelForCausalLM, Gemma2Config

    plain = copy.deepcopy(tiny_llama.model)
    assert plain_output_head(plain) is plain.get_output_embeddings()
    capped = AutoModelForCausalLM.from_config(Gemma2Config(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, final_logit_softcapping=0.5))
    names_before = dict(capped.named_modules()).keys()
    assert plain_output_head(capped) is None
    assert capped.training and dict(capped.named_modules()).keys() == names_before
