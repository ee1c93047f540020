"""The untied LM head's own learning rate (lm_head_lr_scale)."""

from __future__ import annotations

import pytest
import torch

from gritkit.training.config import TrainConfig
from gritkit.model.tiny import build_tiny_model
from gritkit.training.model_setup import parameter_groups


def test_first_adam_step_moves_the_head_by_the_scaled_rate_and_the_rest_by_the_base_rate(tokenizer):
    grit = build_tiny_model("llama", tokenizer, hidden_size=32, num_layers=1, tie_word_embeddings=False)
    model = grit.model
    params = list(model.parameters())
    config = TrainConfig(learning_rate=1e-3, lm_head_lr_scale=4.0)
    optimizer = torch.optim.AdamW(parameter_groups(model, params, config), lr=1e-3, weight_decay=0.0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    torch.manual_seed(0)
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer.step()
    # Adam's first step moves every weight by lr x g / (|g| + eps), i.e. lr for any non-tiny gradient.
    for name, p in model.named_parameters():
        step = (p.detach() - before[name]).abs().max().item()
        expected = 4e-3 if name == "lm_head.weight" else 1e-3
        assert step == pytest.approx(expected, rel=1e-3), name


def test_scale_one_is_a_single_group_and_a_tied_head_is_refused(tokenizer):
    tied = build_tiny_model("llama", tokenizer, hidden_size=32, num_layers=1, tie_word_embeddings=True).model
    params = list(tied.parameters())
    assert parameter_groups(tied, params, TrainConfig()) == [{"params": params}]
    with pytest.raises(ValueError, match="untied LM head"):
        parameter_groups(tied, params, TrainConfig(lm_head_lr_scale=2.0))
    with pytest.raises(ValueError, match="lm_head_lr_scale must be > 0"):
        TrainConfig(lm_head_lr_scale=0.0, embedding_data=["e.jsonl"], generative_data=["g.jsonl"]).check()
