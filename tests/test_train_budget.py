"""Training from scratch helpers: zero-initialised residual branches and the time budget."""

import time

import torch

from gritkit.config import TrainConfig
from gritkit.distributed import Processes
from gritkit.tiny import build_tiny_model
from gritkit.train import _fit_budget


def test_zero_residual_model_is_the_norm_of_its_embeddings(tokenizer):
    grit = build_tiny_model("llama", tokenizer, hidden_size=32, num_layers=2, zero_residual=True)
    ids = torch.tensor([[1, 50, 60, 70, 80]])
    decoder = grit.model.base_model
    with torch.no_grad():
        hidden = decoder(input_ids=ids, is_causal=False).last_hidden_state
        expected = decoder.norm(decoder.embed_tokens(ids))
    torch.testing.assert_close(hidden, expected)
    # The other weights stay random, so the blocks receive gradients from the first step.
    assert grit.model.model.layers[0].self_attn.q_proj.weight.abs().sum() > 0


def test_budget_fits_the_total_to_the_mean_step_time_and_stops_when_spent():
    single = Processes()
    config = TrainConfig(max_minutes=1.0)
    # 10 steps took 6 s: 54 s are left at 0.6 s a step, so 90 more steps fit.
    total = _fit_budget(1000, 10, 0, time.perf_counter() - 6.0, config, single)
    assert 99 <= total <= 100
    assert _fit_budget(1000, 5, 0, time.perf_counter() - 6.0, config, single) == 1000  # not calibrated yet
    assert _fit_budget(1000, 37, 0, time.perf_counter() - 61.0, config, single) == 37  # budget spent
    # Later steps re-fit from the mean so far: 20 steps in 30 s leave 30 s for 20 more.
    assert 39 <= _fit_budget(100, 20, 0, time.perf_counter() - 30.0, config, single) <= 40
    capped = TrainConfig(max_minutes=1.0, max_steps=50)
    assert _fit_budget(1000, 10, 0, time.perf_counter() - 6.0, capped, single) == 50
