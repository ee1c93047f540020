"""Packing is exact: a packed sample's states, vector, losses and gradients equal its padded ones."""

from __future__ import annotations

import random

import pytest
import torch

from gritkit.model.gritlm import decoder_of
from gritkit.training.packed_backward import generative_backward_packed, single_pass_backward
from gritkit.model.packing import Blocks, balanced_bins, first_fit_decreasing, pack, packed_forward, unpack
from gritkit.model.tiny import build_tiny_model
from gritkit.training.backward import StepSettings, embedding_backward, generative_backward

ARCHITECTURES = ("llama", "gpt2")


def _model(tokenizer, architecture, implementation="sdpa", **settings):
    from gritkit.model.config import GritConfig

    grit = build_tiny_model(architecture, tokenizer, config=GritConfig(**settings) if settings else None,
                            hidden_size=64, num_layers=2, initializer_range=0.2)
    grit.model.set_attn_implementation(implementation)
    assert grit.model.config._attn_implementation == implementation
    return grit


def _chats(count, seed=0, vocab=900):
    """Random (ids, loss mask) samples of mixed lengths: chats trained on their second part, and
    every third a plain text trained on every token (so a segment's first token is flagged too)."""
    rng = random.Random(seed)
    items = []
    for index in range(count):
        prompt, answer = (0 if index % 3 == 2 else rng.randint(2, 20)), rng.randint(1, 12)
        ids = [rng.randrange(3, vocab) for _ in range(prompt + answer)]
        items.append((ids, [False] * prompt + [True] * answer))
    return items


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same_grads(a, b):
    assert a.keys() == b.keys() and a
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-4, atol=1e-6), name


def test_first_fit_decreasing_places_every_sample_once_within_capacity():
    lengths = [5, 9, 3, 7, 1, 10, 2, 6]
    bins = first_fit_decreasing(lengths, 10)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 10 for b in bins)
    assert len(bins) == 5  # 43 tokens: 5 rows of 10 at least
    with pytest.raises(ValueError, match="2 samples are longer than the pack length 8"):
        first_fit_decreasing(lengths, 8)


def test_balanced_rows_are_as_few_but_narrower():
    lengths = [40] * 9 + [28]  # 388 tokens: 3 rows of 192, the last nearly empty when filled in order
    full, balanced = first_fit_decreasing(lengths, 192), balanced_bins(lengths, 192)
    assert len(balanced) == len(full) == 3
    widths = [sum(lengths[i] for i in b) for b in balanced]
    assert max(widths) < max(sum(lengths[i] for i in b) for b in full) and max(widths) <= 160
    assert sorted(i for b in balanced for i in b) == list(range(len(lengths)))


def test_mask_confines_attention_and_positions_restart(tokenizer):
    batch = pack([([5, 6, 7], [True] * 3), ([8, 9], [True] * 2)], 0, 6, causal=[True, False])
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1]]
    allowed = batch.attention_mask("sdpa", torch.float32)[0, 0].int().tolist()
    assert allowed == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 1, 1], [0, 0, 0, 1, 1]]
    additive = batch.attention_mask("eager", torch.float32)[0, 0]
    assert ((additive == 0).int().tolist()) == allowed
    with pytest.raises(ValueError, match="sdpa or eager"):
        batch.attention_mask("flash_attention_2", torch.float32)


def _rows(text):
    return [[int(c) for c in row] for row in text.split()]


@pytest.mark.parametrize("bidirectional, blocks", [
    # blocks of 2 and 3 tokens each attend to themselves only (both ways); the 2 turn tokens to all before them
    (True, "1100000 1100000 0011100 0011100 0011100 1111110 1111111"),
    # a model that embeds causally: the same isolated blocks, causal inside
    (False, "1000000 1100000 0010000 0011000 0011100 1111110 1111111"),
])
def test_blocks_attend_to_themselves_and_the_turn_to_all(bidirectional, blocks):
    items = [(list(range(10, 17)), [False] * 5 + [True] * 2), ([8, 9], [True] * 2)]
    batch = pack(items, 0, 9, prefixes=[Blocks((2, 3), bidirectional), Blocks()])
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 4, 5, 6, 0, 1]]  # the blocks at their concatenated positions
    allowed = batch.attention_mask("sdpa", torch.float32)[0, 0].int().tolist()
    assert [row[:7] for row in allowed[:7]] == _rows(blocks)
    assert [row[7:] for row in allowed[7:]] == [[1, 0], [1, 1]]  # the next sample: causal, unaffected
    assert not any(any(row[7:]) for row in allowed[:7]) and not any(any(row[:7]) for row in allowed[7:])
    assert ((batch.attention_mask("eager", torch.float32)[0, 0] == 0).int().tolist()) == allowed
    with pytest.raises(ValueError, match="fewer than its blocks"):
        pack(items, 0, 9, prefixes=[Blocks((4, 4)), Blocks()])


def test_blocks_after_a_causal_start_see_only_themselves():
    """Caches spliced mid-answer: 2 causal tokens, blocks of 2 and 1, then 2 tokens that see all."""
    items = [([5, 6], [True] * 2), (list(range(10, 17)), [True] * 2 + [False] * 3 + [True] * 2)]
    batch = pack(items, 0, 9, prefixes=[Blocks(), Blocks((2, 1), start=2)])
    assert batch.position_ids.tolist() == [[0, 1, 0, 1, 2, 3, 4, 5, 6]]
    allowed = batch.attention_mask("sdpa", torch.float32)[0, 0].int().tolist()
    assert [row[2:] for row in allowed[2:]] == _rows("1000000 1100000 0011000 0011000 0000100 1111110 1111111")
    with pytest.raises(ValueError, match="fewer than its blocks"):
        pack(items, 0, 9, prefixes=[Blocks(), Blocks((4, 2), start=2)])


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_packed_states_equal_each_sample_alone(tokenizer, architecture, implementation):
    grit = _model(tokenizer, architecture, implementation)
    items = _chats(7)
    causal = [i % 2 == 0 for i in range(len(items))]
    batch = pack(items, 0, 40, causal)
    assert batch.input_ids.shape[0] < len(items)
    decoder = decoder_of(grit.model)
    with torch.no_grad():
        packed = packed_forward(decoder, grit.model.config, batch).last_hidden_state
        rows, _ = unpack(batch, packed, range(len(items)))
        for i, (ids, _) in enumerate(items):
            alone = decoder(input_ids=torch.tensor([ids]), is_causal=causal[i], use_cache=False).last_hidden_state[0]
            assert torch.allclose(rows[i, : len(ids)], alone, atol=2e-5), i


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("pooling,attention", [("mean", "bidirectional"), ("weighted_mean", "causal"),
                                               ("last_token", "causal"), ("cls", "bidirectional")])
def test_a_packed_embedding_equals_the_same_text_alone(tokenizer, architecture, pooling, attention):
    grit = _model(tokenizer, architecture, pooling=pooling, attention=attention)
    texts = ["packing keeps every vector", "a", "one longer text about attention masks and positions", "b c"]
    items = grit.tokenize_for_embedding(texts, ["Retrieve it"] * len(texts))
    with torch.no_grad():
        packed = grit.embed_packed(grit.pack(items, 64))
        alone = torch.cat([grit.embed(grit.collate([item])) for item in items])
    assert torch.allclose(packed, alone, atol=2e-5)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("aggregation", ["token", "sample", "mixed"])
def test_packed_generative_step_gives_the_padded_loss_and_gradient(tokenizer, architecture, aggregation):
    grit = _model(tokenizer, architecture)
    items = _chats(11, seed=1)
    settings = StepSettings(micro_batch_size=4, aggregation=aggregation, rows_per_pass=2)
    padded = generative_backward(grit.model, items, settings, weight=0.7)
    expected = _grads(grit.model)
    grit.model.zero_grad(set_to_none=True)
    packed = generative_backward_packed(grit.model, items, settings, capacity=40, weight=0.7)
    assert packed == pytest.approx(padded, rel=1e-5)
    _assert_same_grads(_grads(grit.model), expected)


@pytest.mark.parametrize("chunk_size", [0, 3])
def test_packed_embedding_step_gives_the_padded_loss_and_gradient(tokenizer, chunk_size):
    grit = _model(tokenizer, "llama")
    queries = grit.tokenize_for_embedding([f"query {i} " * (i + 1) for i in range(6)], ["Find it"] * 6)
    documents = grit.tokenize_for_embedding([f"document {i} text " * (2 + i % 3) for i in range(12)], [""] * 12)
    settings = StepSettings(temperature=0.05, group_size=2, chunk_size=chunk_size)
    padded = embedding_backward(grit, queries, documents, settings)
    expected = _grads(grit.model)
    grit.model.zero_grad(set_to_none=True)
    packed = embedding_backward(grit, queries, documents, settings, pack_length=64)
    assert packed == pytest.approx(padded, rel=1e-5)
    _assert_same_grads(_grads(grit.model), expected)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("chunk_size", [0, 4])
def test_single_pass_step_gives_the_two_pass_losses_and_gradient(tokenizer, architecture, chunk_size):
    grit = _model(tokenizer, architecture)
    queries = grit.tokenize_for_embedding([f"what is {i} " * (1 + i % 3) for i in range(5)], ["Find it"] * 5)
    documents = grit.tokenize_for_embedding([f"passage {i} words " * (1 + i % 4) for i in range(10)], [""] * 10)
    chats = _chats(9, seed=2)
    settings = StepSettings(temperature=0.05, group_size=2, chunk_size=chunk_size, micro_batch_size=4,
                            aggregation="mixed", rows_per_pass=2)
    rep = embedding_backward(grit, queries, documents, settings, weight=0.5)
    gen = generative_backward(grit.model, chats, settings, weight=2.0)
    expected = _grads(grit.model)
    grit.model.zero_grad(set_to_none=True)
    losses = single_pass_backward(grit, queries, documents, chats, settings, capacity=64, lambda_rep=0.5, lambda_gen=2.0)
    assert losses == pytest.approx((rep, gen), rel=1e-5)
    _assert_same_grads(_grads(grit.model), expected)


def test_a_sliding_window_shorter_than_a_row_is_refused(tokenizer):
    grit = _model(tokenizer, "mistral")
    grit.model.config.sliding_window = 8
    batch = pack(_chats(3), 0, 40)
    with pytest.raises(ValueError, match="sliding window of 8 tokens"):
        packed_forward(decoder_of(grit.model), grit.model.config, batch)
