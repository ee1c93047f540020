"""Single-row linear products split over the CPU threads give bitwise the results of F.linear."""

from __future__ import annotations

import pytest
import torch

from gritkit.model.threaded_gemv import ThreadedGemvLinear, thread_gemvs


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 576), (1, 1, 576), (576,)])
def test_a_single_row_gives_bitwise_the_plain_product(two_threads, bias, shape):
    torch.manual_seed(0)
    plain = torch.nn.Linear(576, 1536, bias=bias)
    threaded = torch.nn.Linear(576, 1536, bias=bias)
    threaded.load_state_dict(plain.state_dict())
    assert thread_gemvs(threaded) == 1 and type(threaded) is ThreadedGemvLinear
    x = torch.randn(shape)
    with torch.inference_mode():
        assert torch.equal(threaded(x), plain(x))


def test_batches_and_gradients_take_the_plain_path(two_threads):
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 6)
    thread_gemvs(layer)
    x = torch.randn(1, 8, requires_grad=True)
    layer(x).sum().backward()  # with gradients: F.linear, so backward works as before
    assert x.grad is not None and layer.weight.grad is not None
    rows = torch.randn(3, 8)
    with torch.inference_mode():
        assert torch.equal(layer(rows), torch.nn.functional.linear(rows, layer.weight, layer.bias))


def test_a_grit_model_decodes_the_tokens_of_plain_linear_layers(tiny_llama, two_threads):
    """GritLM threads its linear layers; greedy generation is token-identical to plain layers."""
    assert all(type(m) is not torch.nn.Linear for m in tiny_llama.model.modules())
    threaded = tiny_llama.generate("Write about embeddings", max_new_tokens=12)
    modules = [m for m in tiny_llama.model.modules() if type(m) is ThreadedGemvLinear]
    for module in modules:
        module.__class__ = torch.nn.Linear
    try:
        plain = tiny_llama.generate("Write about embeddings", max_new_tokens=12)
    finally:
        for module in modules:
            module.__class__ = ThreadedGemvLinear
    assert threaded == plain
