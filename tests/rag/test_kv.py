"""Key/value caches of the embedding pass: re-rotation to true positions and concatenation."""

from __future__ import annotations

import pytest
import torch

from gritkit.model.gritlm import decoder_of
from gritkit.rag.kv import UnsupportedModelError, check_supported, concatenate_segments, embed_with_cache, rotate_keys

TEXTS = ["The first segment: a short document about json parsing.",
         "The second segment, which is a little longer than the first one and talks about sockets."]


@pytest.fixture(scope="module")
def tiny_qwen2(tokenizer):
    from gritkit.model.tiny import build_tiny_model

    return build_tiny_model("qwen2", tokenizer, hidden_size=64, num_layers=2, initializer_range=0.2)


@pytest.fixture(params=["llama", "qwen2"])
def grit(request, tiny_llama, tiny_qwen2):
    return tiny_llama if request.param == "llama" else tiny_qwen2


def test_rotated_keys_equal_keys_encoded_at_offset(grit):
    """Re-rotating a segment's cache by 37 positions = encoding it at positions 37.. (bidirectional)."""
    _, (segment,) = embed_with_cache(grit, [TEXTS[1]])
    offset = 37
    ids = torch.tensor([segment.token_ids])
    with torch.no_grad():
        out = decoder_of(grit.model)(input_ids=ids, position_ids=torch.arange(ids.shape[1])[None] + offset,
                                     is_causal=False, use_cache=True)
    for layer, cached in enumerate(out.cache.layers):
        moved = rotate_keys(grit.model, segment.keys[layer], offset)
        torch.testing.assert_close(moved, cached.keys[0], atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(segment.values[layer], cached.values[0], atol=2e-5, rtol=1e-4)
    # The keys really depend on position: without the rotation they differ.
    assert (segment.keys[0] - out.cache.layers[0].keys[0]).abs().max() > 1e-2


def _block_causal_mask(first: int, cached: int, total: int) -> torch.Tensor:
    """Causal, except that the second segment's tokens do not see the first segment (as when
    each segment was encoded alone); the tokens after both see everything before them."""
    allowed = torch.tril(torch.ones(total, total, dtype=torch.bool))
    allowed[first:cached, :first] = False
    return allowed[None, None]


def test_causal_concatenated_cache_forward_equals_plain_forward(grit):
    """Two causal caches made apart and concatenated at true positions give the same logits as
    one plain forward over the same tokens (with the second segment blind to the first)."""
    _, segments = embed_with_cache(grit, TEXTS, causal=True)
    cache, cached_ids = concatenate_segments(grit.model, segments)
    assert cache.get_seq_length() == len(cached_ids) == len(segments[0]) + len(segments[1])
    assert cached_ids == segments[0].token_ids + segments[1].token_ids
    tail = grit.tokenizer("\n<|user|>\nAnswer it\n<|assistant|>\n", add_special_tokens=False)["input_ids"]
    full = cached_ids + tail
    with torch.no_grad():
        with_cache = grit.model(input_ids=torch.tensor([tail]), cache=cache).logits
        mask = _block_causal_mask(len(segments[0]), len(cached_ids), len(full))
        plain = grit.model(input_ids=torch.tensor([full]), attention_mask=mask).logits[:, len(cached_ids):]
        torch.testing.assert_close(with_cache, plain, atol=5e-5, rtol=1e-4)
        # The reference's defect (second cache restarting at position 0) does not pass this test.
        restarted, _ = concatenate_segments(grit.model, segments[:1])
        for layer in range(len(restarted.layers)):
            restarted.layers[layer].keys = torch.cat([restarted.layers[layer].keys, segments[1].keys[layer][None]], 2)
            restarted.layers[layer].values = torch.cat([restarted.layers[layer].values,
                                                        segments[1].values[layer][None]], 2)
        wrong = grit.model(input_ids=torch.tensor([tail]), cache=restarted).logits
    assert (wrong - plain).abs().max() > 1e-2


def test_embedding_pass_vectors_equal_encode(grit):
    """The pass that yields the cache gives the same embeddings as GritLM.encode."""
    vectors, _ = embed_with_cache(grit, TEXTS, instruction="Retrieve a passage")
    expected = grit.encode(TEXTS, instruction="Retrieve a passage", convert_to_tensor=True)
    torch.testing.assert_close(vectors, expected, atol=1e-5, rtol=1e-4)


def test_unsupported_architecture_is_refused(tokenizer):
    from gritkit.model.tiny import build_tiny_model

    gpt2 = build_tiny_model("gpt2", tokenizer, hidden_size=32, num_layers=1)
    with pytest.raises(UnsupportedModelError, match="'gpt2'"):
        check_supported(gpt2.model)
