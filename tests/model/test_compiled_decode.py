"""A compiled decode step with a static cache answers with the eager decoder's tokens at fp32."""

from __future__ import annotations

import pytest
import torch._dynamo.utils

from gritkit import GritLM
from gritkit.model import compiled_decode
from gritkit.model.compiled_decode import CACHE_SIZES, cache_size, compile_mode
from gritkit.model.threaded_gemv import ThreadedGemvLinear


def test_cache_sizes_are_the_smallest_that_hold_the_text():
    assert cache_size(1) == CACHE_SIZES[0]
    assert cache_size(CACHE_SIZES[0]) == CACHE_SIZES[0]
    assert cache_size(CACHE_SIZES[0] + 1) == CACHE_SIZES[1]
    assert cache_size(CACHE_SIZES[-1] + 1) is None


def test_compile_settings_name_a_mode():
    assert [compile_mode(c) for c in (False, None, True, "exact", "max-autotune")] == [
        None, None, "exact", "exact", "max-autotune"]
    with pytest.raises(ValueError, match="compile must be False, True or one of exact, max-autotune"):
        compile_mode("fast")


def test_compiled_greedy_answers_are_the_eager_tokens(tiny_llama_dir):
    compiled = GritLM.from_pretrained(tiny_llama_dir, device="cpu", compile=True)
    eager = GritLM(compiled.model, compiled.tokenizer, compiled.config)
    assert eager.compiled_decode is None and compiled.with_config().compiled_decode is compiled.compiled_decode
    prompts = ["hello there", "a much longer prompt about tokenizers, caches and models"]
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for prompt in prompts:  # two prompt lengths, one cache size: compiled once
        assert compiled.generate(prompt, max_new_tokens=12) == eager.generate(prompt, max_new_tokens=12)
    assert compiled.compiled_decode.compiled == {(1, CACHE_SIZES[0])}
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > graphs  # compiled, not silently eager
    assert compiled.generate(prompts, max_new_tokens=6) == eager.generate(prompts, max_new_tokens=6)


def test_text_past_the_largest_cache_decodes_eagerly(tiny_llama_dir, monkeypatch):
    monkeypatch.setattr(compiled_decode, "CACHE_SIZES", (4,))
    compiled = GritLM.from_pretrained(tiny_llama_dir, device="cpu", compile=True)
    eager = GritLM(compiled.model, compiled.tokenizer, compiled.config)
    assert compiled.generate("hello there", max_new_tokens=5) == eager.generate("hello there", max_new_tokens=5)
    assert compiled.compiled_decode.compiled == set()


def test_the_cache_is_reset_between_calls(tiny_llama_dir):
    compiled = GritLM.from_pretrained(tiny_llama_dir, device="cpu", compile=True)
    first = compiled.generate("hello there", max_new_tokens=8)
    compiled.generate("something else entirely, longer than the first", max_new_tokens=8)
    assert compiled.generate("hello there", max_new_tokens=8) == first


def test_max_autotune_decodes_with_frozen_weights_and_plain_products(tiny_llama_dir):
    model = GritLM.from_pretrained(tiny_llama_dir, device="cpu", quantize="int8", compile="max-autotune")
    eager = GritLM.from_pretrained(tiny_llama_dir, device="cpu", quantize="int8")
    assert not any(isinstance(m, ThreadedGemvLinear) for m in model.model.modules())
    # int8 products in another kernel: the sums differ in their last bits, not enough to change the
    # argmax of this model's well-separated logits over a few tokens.
    assert model.generate("hello there", max_new_tokens=4) == eager.generate("hello there", max_new_tokens=4)
    # Another cache size or batch decodes eagerly: the step keeps the first call's shape.
    longer = "a prompt " * 40
    assert model.generate(longer, max_new_tokens=200) == eager.generate(longer, max_new_tokens=200)
    assert model.generate(["hello there", "hi"], max_new_tokens=3) == eager.generate(["hello there", "hi"],
                                                                                    max_new_tokens=3)
    assert model.compiled_decode.compiled == {(1, CACHE_SIZES[0])}


def test_one_greedy_sequence_decodes_in_gritkits_loop_with_generates_tokens(tiny_llama_dir, monkeypatch):
    compiled = GritLM.from_pretrained(tiny_llama_dir, device="cpu", compile=True)
    prompt = torch.tensor([compiled.chat_input_ids("hello there")])
    mask = torch.ones_like(prompt)
    eager = compiled.model.generate(input_ids=prompt, attention_mask=mask, max_new_tokens=12, do_sample=False)
    end = int(eager[0, prompt.shape[1] + 3])  # a token it writes: as the end token, decoding stops there
    stopped, forced = (compiled.model.generate(input_ids=prompt, attention_mask=mask, max_new_tokens=12, do_sample=False,
                                               eos_token_id=end, pad_token_id=0, min_new_tokens=least)
                       for least in (0, 12))

    def refuse(**kwargs):
        raise AssertionError("transformers' generate was called")

    monkeypatch.setattr(compiled.model, "generate", refuse)
    assert compiled.generate_ids(prompt, mask, 12).tolist() == eager.tolist()
    kwargs = dict(input_ids=prompt, attention_mask=mask, max_new_tokens=12, pad_token_id=0, eos_token_id=end,
                  do_sample=False)
    got = compiled.compiled_decode.generate(refuse, 1, prompt.shape[1] + 12, **kwargs)
    assert got.tolist() == stopped.tolist() and int(got[0, -1]) == end and got.shape[1] < eager.shape[1]
    # min_new_tokens: the end token cannot be chosen before it, as transformers' processor does
    got = compiled.compiled_decode.generate(refuse, 1, prompt.shape[1] + 12, min_new_tokens=12, **kwargs)
    assert got.tolist() == forced.tolist() and forced.shape[1] == eager.shape[1]
    for other in ({"repetition_penalty": 1.5}, {"do_sample": True}):  # not plain greedy: transformers decodes
        with pytest.raises(AssertionError, match="generate was called"):
            compiled.generate_ids(prompt, mask, 12, **other)
