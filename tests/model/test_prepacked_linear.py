"""Prepacked (oneDNN-reordered) linear layers compute F.linear's products, and a prepacked GritLM
embeds and answers as the plain one does, for inference only."""

from __future__ import annotations

import pytest
import torch

from gritkit import GritLM
from gritkit.model.prepacked_linear import PrepackedLinear, is_prepacked, prepack_linears, prepack_problem
from gritkit.model.threaded_gemv import thread_gemvs

needs_bf16 = pytest.mark.skipif(prepack_problem("cpu", torch.bfloat16) is not None,
                                reason="this CPU has no bfloat16 instructions for oneDNN")


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 64), (16, 64), (200, 64), (3, 5, 64)])
def test_a_prepacked_layer_gives_f_linear_to_float_rounding(bias, shape):
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 96, bias=bias)
    x = torch.randn(*shape)
    with torch.inference_mode():
        expected = layer(x)
        out = PrepackedLinear(layer)(x)
    assert out.shape == expected.shape == (*shape[:-1], 96)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@needs_bf16
def test_a_bfloat16_layer_stays_in_bfloat16_and_near_the_fp32_product():
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 96).bfloat16()
    x = torch.randn(16, 64).bfloat16()
    with torch.inference_mode():
        out = PrepackedLinear(layer)(x)
    expected = x.float() @ layer.weight.detach().float().T + layer.bias.detach().float()
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)


def test_prepack_linears_replaces_every_linear_layer_and_refuses_what_onednn_cannot_run():
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(16, 4)))
    thread_gemvs(model)  # GritLM's layers are this subclass
    assert not is_prepacked(model)
    assert prepack_linears(model) == 2
    assert is_prepacked(model) and not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    half = torch.nn.Sequential(torch.nn.Linear(8, 16)).half()
    with pytest.raises(ValueError, match="float32 and bfloat16"):
        prepack_linears(half)
    assert not is_prepacked(half)  # nothing replaced
    assert "CPU" in prepack_problem("cuda", torch.float32)


def test_a_prepacked_layer_refuses_to_take_part_in_training():
    layer = PrepackedLinear(torch.nn.Linear(8, 4))
    with pytest.raises(RuntimeError, match="no gradient"):
        layer(torch.randn(2, 8, requires_grad=True))


def test_a_prepacked_model_embeds_and_answers_as_the_plain_one(tiny_llama_dir):
    plain = GritLM.from_pretrained(tiny_llama_dir, device="cpu")
    packed = GritLM.from_pretrained(tiny_llama_dir, device="cpu", prepack=True)
    assert is_prepacked(packed.model) and not is_prepacked(plain.model)
    texts = ["a short text", "a somewhat longer text about tokenizers and models " * 6]
    for instruction in ("", "Retrieve the passage"):
        torch.testing.assert_close(torch.as_tensor(packed.encode(texts, instruction=instruction)),
                                   torch.as_tensor(plain.encode(texts, instruction=instruction)),
                                   rtol=1e-4, atol=1e-5)
    ids = torch.tensor([plain.chat_input_ids("hello there")])
    with torch.inference_mode():
        torch.testing.assert_close(packed.model(ids).logits, plain.model(ids).logits, rtol=1e-4, atol=1e-4)
    for prompt in ("hello there", "name three colours"):
        assert packed.generate(prompt, max_new_tokens=12) == plain.generate(prompt, max_new_tokens=12)


def test_a_prepacked_model_refuses_to_save_and_conflicting_options_fail_before_loading(tiny_llama_dir, tmp_path):
    packed = GritLM.from_pretrained(tiny_llama_dir, device="cpu", prepack=True)
    with pytest.raises(ValueError, match="without prepack= to save it"):
        packed.save_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved").exists()
    for options, message in (({"quantize": "int8"}, "alternatives"), ({"compile": True}, "cannot go with compile"),
                             ({"device": "cuda"}, "on the CPU"), ({"dtype": "float16"}, "float32 and bfloat16")):
        with pytest.raises(ValueError, match=message):
            GritLM.from_pretrained(tiny_llama_dir, prepack=True, **{"device": "cpu", **options})


def test_auto_prepacks_only_where_nothing_else_is_asked_for(tiny_llama_dir):
    assert is_prepacked(GritLM.from_pretrained(tiny_llama_dir, device="cpu", prepack="auto").model)
    for options in ({"quantize": "int8"}, {"compile": True}, {"dtype": "auto"}, {"dtype": "float16"}):
        model = GritLM.from_pretrained(tiny_llama_dir, prepack="auto", **{"device": "cpu", **options})
        assert not is_prepacked(model.model), options
    with pytest.raises(ValueError, match="prepack must be"):
        GritLM.from_pretrained(tiny_llama_dir, device="cpu", prepack="yes")


def _mapped_from(path) -> list[tuple[int, int]]:
    """Address ranges of this process mapped from the files under ``path`` (Linux)."""
    ranges = []
    for line in open("/proc/self/maps"):
        fields = line.split()
        if len(fields) >= 6 and fields[5].startswith(str(path)):
            start, end = (int(part, 16) for part in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/maps"), reason="reads Linux's /proc/self/maps")
def test_prepacking_leaves_no_tensor_on_the_memory_mapped_checkpoint(tiny_llama_dir):
    """The remaining weights (the embedding table) get memory of their own, so the checkpoint's
    mapping, all of it read for the reordering, can go with the replaced weights."""
    plain = GritLM.from_pretrained(tiny_llama_dir, device="cpu")
    table = plain.model.get_input_embeddings().weight
    if not any(start <= table.data_ptr() < end for start, end in _mapped_from(tiny_llama_dir)):
        pytest.skip("this loader copies the checkpoint instead of mapping it")
    packed = GritLM.from_pretrained(tiny_llama_dir, device="cpu", prepack=True)
    mapped = _mapped_from(tiny_llama_dir)
    for module in packed.model.modules():
        if not isinstance(module, PrepackedLinear):
            for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
                assert not any(start <= tensor.data_ptr() < end for start, end in mapped)
