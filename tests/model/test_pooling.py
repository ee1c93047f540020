"""Pooling functions against loops written out by hand."""

import pytest
import torch

from gritkit.model.pooling import pool


@pytest.fixture
def states():
    torch.manual_seed(0)
    hidden = torch.randn(3, 6, 4, dtype=torch.bfloat16)
    mask = torch.tensor([[0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]])
    return hidden, mask


def _rows(hidden, mask):
    for row in range(hidden.shape[0]):
        yield [hidden[row, t].float() for t in range(hidden.shape[1]) if mask[row, t]]


def test_mean(states):
    expected = torch.stack([sum(r) / len(r) for r in _rows(*states)])
    torch.testing.assert_close(pool(*states, "mean"), expected)


def test_weighted_mean(states):
    expected = torch.stack([sum((i + 1) * v for i, v in enumerate(r)) / sum(range(1, len(r) + 1)) for r in _rows(*states)])
    torch.testing.assert_close(pool(*states, "weighted_mean"), expected)


def test_last_token_and_cls(states):
    torch.testing.assert_close(pool(*states, "last_token"), torch.stack([r[-1] for r in _rows(*states)]))
    torch.testing.assert_close(pool(*states, "cls"), torch.stack([r[0] for r in _rows(*states)]))


def test_output_is_float32_and_unknown_method_is_rejected(states):
    assert pool(*states, "mean").dtype == torch.float32
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        pool(*states, "max")
