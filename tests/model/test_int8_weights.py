"""Weight-only int8 layers compute the product of their dequantized weights, with either kernel."""

from __future__ import annotations

import pytest
import torch

from gritkit import GritLM
from gritkit.model.int8_weights import FEW_ROWS, Int8WeightLinear, quantization_of, quantize_weights
from gritkit.model.threaded_gemv import thread_gemvs


def _layer(bias: bool, out_features: int = 96, in_features: int = 64) -> torch.nn.Linear:
    torch.manual_seed(0)
    layer = torch.nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        layer.weight[3] *= 40  # channels of very different ranges: each keeps its own scale
        layer.weight[5] = 0  # an all-zero channel must not divide by zero
    return layer


def test_levels_and_scales_reconstruct_each_weight_within_half_a_step():
    layer = _layer(bias=False)
    quantized = Int8WeightLinear(layer)
    levels, scale = quantized.weight_int8, quantized.scale
    assert levels.dtype == torch.int8 and int(levels.abs().max()) <= 127
    assert scale.dtype == torch.bfloat16
    error = (layer.weight.detach() - quantized.dequantized()).abs()
    assert torch.all(error <= scale.float()[:, None] / 2 * 1.01 + 1e-12)
    assert torch.equal(quantized.dequantized()[5], torch.zeros(64))


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, FEW_ROWS, FEW_ROWS + 1, 200])
def test_both_kernels_compute_the_dequantized_product_of_bfloat16_inputs(bias, rows):
    layer = _layer(bias)
    quantized = Int8WeightLinear(layer)
    x = torch.randn(rows, 64)
    expected = x.bfloat16().float() @ quantized.dequantized().T  # the hand computation, in fp32
    if bias:
        expected = expected + layer.bias.detach()
    with torch.inference_mode():
        out = quantized(x)
    assert out.dtype == torch.float32 and out.shape == (rows, 96)
    # Products are accumulated in fp32 and rounded to bfloat16 once (8 bits of mantissa).
    torch.testing.assert_close(out, expected, rtol=1e-2, atol=1e-2 * expected.abs().max().item())


def test_a_row_gets_the_same_result_alone_and_in_a_large_batch():
    quantized = Int8WeightLinear(_layer(bias=True))
    x = torch.randn(FEW_ROWS + 8, 64)
    with torch.inference_mode():
        alone = quantized(x[:2])  # the int8 kernel
        batched = quantized(x)[:2]  # the bfloat16 product of the converted weight
    torch.testing.assert_close(alone, batched, rtol=1e-2, atol=1e-2)


def test_quantize_weights_replaces_every_linear_layer_threaded_ones_included():
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(16, 4)))
    thread_gemvs(model)
    assert quantization_of(model) is None
    assert quantize_weights(model, "int8") == 2
    assert quantization_of(model) == "int8"
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    with pytest.raises(ValueError, match="quantize must be one of int8"):
        quantize_weights(model, "int4")


def test_a_quantized_model_embeds_and_generates_close_to_fp32_and_refuses_to_save(tiny_llama_dir, tmp_path):
    plain = GritLM.from_pretrained(tiny_llama_dir, device="cpu")
    quantized = GritLM.from_pretrained(tiny_llama_dir, device="cpu", quantize="int8")
    assert quantization_of(quantized.model) == "int8" and quantization_of(plain.model) is None
    texts = ["a short text", "a somewhat longer text about tokenizers and models " * 6]
    cosine = torch.nn.functional.cosine_similarity(torch.as_tensor(plain.encode(texts)),
                                                   torch.as_tensor(quantized.encode(texts)))
    assert torch.all(cosine > 0.99), cosine
    ids = torch.tensor([plain.chat_input_ids("hello there")])
    with torch.inference_mode():
        reference = torch.log_softmax(plain.model(ids).logits[0, -1], -1)
        approximate = torch.log_softmax(quantized.model(ids).logits[0, -1], -1)
    assert torch.nn.functional.cosine_similarity(reference, approximate, dim=0) > 0.99
    assert isinstance(quantized.generate("hello there", max_new_tokens=4), str)
    with pytest.raises(ValueError, match="quantized"):
        quantized.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="quantize must be one of"):
        GritLM.from_pretrained(tiny_llama_dir, device="cpu", quantize="int4")
