"""Training from scratch helpers: zero-initialised residual branches and the time budget."""

import torch

from gritkit.model.tiny import build_tiny_model
from gritkit.training.schedule import StepSchedule, lr_factor


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
    schedule = StepSchedule(1000, warmup_ratio=0.03, max_minutes=1.0)
    assert schedule.refit(5, 0, 6.0) == 1000  # not calibrated yet
    # 10 steps took 6 s: 54 s are left at 0.6 s a step, so 90 more steps fit.
    assert 99 <= schedule.refit(10, 0, 6.0) <= 100
    # Later steps re-fit from the mean so far: 20 steps in 30 s leave 30 s for 20 more.
    assert 39 <= schedule.refit(20, 0, 30.0) <= 40
    assert schedule.factor(39) == lr_factor(39, schedule.total, 0.03)  # warm-up and decay follow the new total
    assert schedule.refit(37, 0, 61.0) == 37  # budget spent
    capped = StepSchedule(1000, warmup_ratio=0.03, max_minutes=1.0, max_steps=50)
    assert capped.refit(10, 0, 6.0) == 50
    # a resumed run calibrates on its own steps: 10 steps after step 100 took 5 s, 55 s fit 110 more
    assert 219 <= StepSchedule(1000, 0.03, max_minutes=1.0).refit(110, 100, 5.0) <= 220
    fixed = StepSchedule(300, 0.03)
    assert fixed.refit(299, 0, 1e6) == 300  # no budget: the total never moves


class _StepClock:
    """A stand-in for the trainer's clock: every optimiser step takes 10 seconds (each reading
    adds a microsecond, so that no step takes zero time)."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 1e-6
        return self.now


def test_a_resumed_run_keeps_what_is_left_of_its_time_budget(monkeypatch, tmp_path):
    """A 1-minute budget at 10 s a step is 6 steps, whether or not the run is interrupted."""
    import gritkit.training.loop as train_module
    from gritkit.training.metrics import Callback
    from gritkit.training.loop import train
    from tests.training.test_train import read_metrics, tiny_config

    class Tick(Callback):
        def __init__(self, stop_after=None):
            self.stop_after = stop_after

        def on_step(self, record):
            clock.now += 10.0
            if record["step"] == self.stop_after:
                raise KeyboardInterrupt  # the checkpoint of the step before survives

    settings = ("max_minutes=1", "max_steps=50", "save_every=1")
    clock = _StepClock()
    monkeypatch.setattr(train_module, "time", clock)
    train(tiny_config(tmp_path / "whole", *settings), callbacks=[Tick()])
    try:
        train(tiny_config(tmp_path / "cut", *settings), callbacks=[Tick(stop_after=4)])
    except KeyboardInterrupt:
        pass
    clock.now += 1000.0  # the pause between the two processes is not training time
    train(tiny_config(tmp_path / "cut", *settings, "resume=true"), callbacks=[Tick()])
    whole, cut = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "cut")
    assert [m["step"] for m in whole] == list(range(1, 7))
    assert [m["step"] for m in cut][-3:] == [4, 5, 6]
    assert [m["lr"] for m in cut[-3:]] == [m["lr"] for m in whole[-3:]]
