"""Reported training faults, replayed: silent NaN runs, configs that make no sense, resumes that lose
progress after a crash in a checkpoint save, and checkpoints read with arbitrary unpickling."""

from __future__ import annotations

import copy
import json
import math
import random

import pytest
import torch

from gritkit import cli
from gritkit.parallel.distributed import Processes
from gritkit.training.config import TrainConfig, load_config
from gritkit.training.loop import train
from gritkit.training.metrics import Callback
from tests.training.test_train import REPO, read_metrics, tiny_args, tiny_config


# --- 1. a run whose loss turns NaN stops there, says why, and saves nothing broken -------------------------------

def test_nan_loss_stops_the_run_with_one_line_and_no_final_model(tmp_path, capsys):
    out = tmp_path / "run"
    # 1.0e+9: a float to YAML 1.1 on every version of the code; the checkpoint of step 1 precedes the NaN of step 2
    status = cli.main(["train", *tiny_args(out, "learning_rate=1.0e+9", "max_steps=4", "save_every=1")])
    assert status != 0
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1, errors
    assert errors[0].startswith("gritkit train: error: step 2: loss_")
    assert "is nan" in errors[0] and "learning rate (1e9) is likely too high" in errors[0]
    assert not (out / "final").exists()
    state = torch.load(out / "checkpoint" / "training_state.pt", weights_only=True)
    assert state["step"] == 1  # the checkpoint saved before the NaN stays; none is written after it
    assert all(math.isfinite(m["loss_gen"]) for m in read_metrics(out))


# --- 2. config values that make no sense are refused before a model is built --------------------------------------

@pytest.mark.parametrize("override, message", [
    ("lambda_rep=-1", "lambda_rep must be >= 0, got -1.0"),
    ("lambda_gen=-0.5", "lambda_gen must be >= 0, got -0.5"),
    ("lambda_doc_cache=-2", "lambda_doc_cache must be >= 0, got -2.0"),
    ("learning_rate=-0.001", "learning_rate must be >= 0, got -0.001"),
    ("learning_rate=.inf", "learning_rate must be finite, got inf"),
    ("temperature=.nan", "temperature must be finite, got nan"),
    ("weight_decay=-0.1", "weight_decay must be >= 0, got -0.1"),
    ("adam_beta1=1.0", r"adam_beta1 must be in \[0, 1\), got 1.0"),
    ("adam_beta2=-0.1", r"adam_beta2 must be in \[0, 1\), got -0.1"),
    ("max_grad_norm=-1", "max_grad_norm must be >= 0, got -1.0"),
    ("lora_dropout=1.0", r"lora_dropout must be in \[0, 1\), got 1.0"),
    ("max_minutes=.inf", "max_minutes must be finite, got inf"),
])
def test_values_out_of_range_are_refused_naming_key_and_value(override, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        tiny_config(tmp_path / "run", override)


def test_lora_alpha_must_be_positive_with_lora(tmp_path):
    with pytest.raises(ValueError, match="lora_alpha must be > 0 with lora_r=4, got 0"):
        tiny_config(tmp_path / "run", "lora_r=4", "lora_alpha=0")
    tiny_config(tmp_path / "run", "lora_r=0", "lora_alpha=0")  # no LoRA: alpha is unused


@pytest.mark.parametrize("overrides, weights", [
    (("mode=embedding", "lambda_rep=0"), "lambda_rep=0.0"),
    (("mode=generative", "lambda_gen=0"), "lambda_gen=0.0"),
    (("lambda_rep=0", "lambda_gen=0"), "lambda_rep=0.0, lambda_gen=0.0"),
])
def test_a_mode_with_every_objective_at_weight_zero_is_refused(overrides, weights, tmp_path):
    with pytest.raises(ValueError, match=f"trains nothing: {weights}"):
        tiny_config(tmp_path / "run", *overrides)


def test_the_python_api_checks_the_same_ranges():
    with pytest.raises(ValueError, match="lambda_gen must be >= 0, got -1"):
        TrainConfig(embedding_data=["a.jsonl"], generative_data=["b.jsonl"], lambda_gen=-1).check()


@pytest.mark.parametrize("written, value", [("2e-5", 2e-5), ("1E-4", 1e-4), ("5e3", 5e3)])
def test_floats_in_exponent_notation_are_read_as_numbers(written, value, tmp_path):
    assert tiny_config(tmp_path / "run", f"learning_rate={written}").learning_rate == value
    config_file = tmp_path / "config.yaml"
    config_file.write_text((REPO / "configs/tiny.yaml").read_text().replace("learning_rate: 0.001",
                                                                             f"learning_rate: {written}"))
    assert load_config(config_file).learning_rate == value


def test_a_number_in_exponent_notation_is_checked_as_a_number(tmp_path):
    with pytest.raises(ValueError, match="lm_head_lr_scale must be > 0, got -0.03"):
        tiny_config(tmp_path / "run", "lm_head_lr_scale=-3e-2")


def test_int_keys_take_whole_numbers_in_exponent_notation_only(tmp_path):
    assert tiny_config(tmp_path / "run", "max_steps=1e3").max_steps == 1000
    with pytest.raises(ValueError, match=r"max_steps must be int, got '1\.5e0' \(not a whole number\)"):
        tiny_config(tmp_path / "run", "max_steps=1.5e0")
    with pytest.raises(ValueError, match="learning_rate must be float, got 'fast'"):
        tiny_config(tmp_path / "run", "learning_rate=fast")


# --- 3. a resume finds the newest complete checkpoint wherever a crash left it --------------------------------------

class _Killed(Exception):
    """Stands for a kill: the run stops where it is, nothing cleans up after it."""


class _Crash(Callback):
    """Dies (as a kill would) at ``step``; ``steps`` lists the steps the run took."""

    def __init__(self, step: int = 0):
        self.step, self.steps = step, []

    def on_step(self, record):
        self.steps.append(record["step"])
        if record["step"] == self.step:
            raise _Killed(f"killed at step {self.step}")


def test_resume_recovers_a_checkpoint_left_between_the_two_renames(tmp_path):
    out = tmp_path / "run"
    run = ("max_steps=4", "save_every=2")
    with pytest.raises(_Killed):
        train(tiny_config(out, *run), callbacks=[_Crash(3)])
    # killed inside replace_dir: the complete checkpoint of step 2 renamed aside, the new one not yet in place
    (out / "checkpoint").rename(out / ".checkpoint.old-4242")
    (out / "..checkpoint.tmp.tmp-4242").mkdir()  # a model directory still being written
    (out / ".final.tmp-77").mkdir()
    with (out / "metrics.jsonl").open("a") as handle:  # and a line torn by the kill
        handle.write('{"step": 4, "loss_r')
    lines, resumed = [], _Crash()
    train(tiny_config(out, *run, "resume=true"), callbacks=[resumed], log=lines.append)
    assert resumed.steps == [3, 4]
    assert [m["step"] for m in read_metrics(out)] == [1, 2, 3, 4]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    text = "\n".join(lines)
    assert "recovered the checkpoint of step 2 from .checkpoint.old-4242" in text
    assert "..checkpoint.tmp.tmp-4242" in text and ".final.tmp-77" in text
    assert "metrics.jsonl:4: dropped a torn last line" in text


def _fake_checkpoint(path, step):
    from gritkit.training.checkpoint import mark_complete

    path.mkdir()
    mark_complete(path, step, Processes())


def test_recovery_takes_the_newest_complete_save_and_drops_unfinished_ones(tmp_path):
    from gritkit.training.checkpoint import recover_checkpoint, saved_step

    _fake_checkpoint(tmp_path / "checkpoint", 4)
    _fake_checkpoint(tmp_path / ".checkpoint.tmp", 6)  # finished, killed before the first rename
    (tmp_path / ".checkpoint.old-9").mkdir()  # torn: no marker
    lines = []
    assert recover_checkpoint(tmp_path, Processes(), lines.append) == tmp_path / "checkpoint"
    assert saved_step(tmp_path / "checkpoint") == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    assert any(".checkpoint.tmp" in line and "step 6" in line for line in lines)

    (tmp_path / ".checkpoint.tmp").mkdir()  # a save cut short before its marker: the canonical one stays
    assert recover_checkpoint(tmp_path, Processes(), lines.append) == tmp_path / "checkpoint"
    assert saved_step(tmp_path / "checkpoint") == 6 and not (tmp_path / ".checkpoint.tmp").exists()


def test_a_checkpoint_without_its_marker_is_not_resumed_silently(tmp_path):
    from gritkit.training.checkpoint import recover_checkpoint

    (tmp_path / "checkpoint").mkdir()
    with pytest.raises(ValueError, match="checkpoint has no COMPLETE marker"):
        recover_checkpoint(tmp_path, Processes(), print)


def _metrics_file(directory, lines):
    (directory / "metrics.jsonl").write_text("".join(line + "\n" for line in lines).rstrip("\n"))


def test_metrics_drop_a_torn_last_line_and_name_a_corrupt_one(tmp_path):
    from gritkit.training.metrics import Metrics

    good = [json.dumps({"step": s, "loss_rep": 1.0}) for s in (1, 2, 3)]
    _metrics_file(tmp_path, [*good, '{"step": 4, "lo'])
    lines = []
    Metrics(tmp_path, 3, tensorboard=False, log=lines.append).close()
    assert [m["step"] for m in read_metrics(tmp_path)] == [1, 2, 3]
    assert lines == [f"train: {tmp_path / 'metrics.jsonl'}:4: dropped a torn last line (a run killed while writing it)"]

    _metrics_file(tmp_path, [good[0], "{not json", *good[1:]])
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a JSON record"):
        Metrics(tmp_path, 3, tensorboard=False, log=print)


# --- 4. checkpoints hold plain data and are read with weights_only=True ---------------------------------------------

def _plain(value, where="state"):
    """Raise AssertionError where ``value`` holds anything but tensors, numbers, strings, None, dicts and lists."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str), f"{where}: key {key!r}"
            _plain(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _plain(item, f"{where}[{index}]")
    else:
        assert value is None or isinstance(value, (torch.Tensor, bool, int, float, str)), f"{where}: {type(value)}"


def _trained_state(grit):
    model = grit.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model(input_ids=torch.tensor([[1, 2, 3]])).logits.sum().backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return optimizer, scheduler


def test_checkpoint_round_trips_with_weights_only(tiny_llama, tmp_path):
    from gritkit.training.checkpoint import load_checkpoint, save_checkpoint

    grit = copy.copy(tiny_llama)  # the session's model stays untrained
    grit.model = copy.deepcopy(tiny_llama.model)
    optimizer, scheduler = _trained_state(grit)
    torch.manual_seed(7)
    random.seed(7)
    save_checkpoint(tmp_path / "checkpoint", grit, optimizer, scheduler, 5, Processes(),
                    schedule={"total": 9, "elapsed_s": 1.5})
    expected = torch.rand(3), random.random()
    state = torch.load(tmp_path / "checkpoint" / "training_state.pt", weights_only=True)
    _plain({k: v for k, v in state.items() if k not in ("optimizer", "scheduler")})
    _plain(torch.load(tmp_path / "checkpoint" / "rng-0.pt", weights_only=True))
    fresh = torch.optim.AdamW(grit.model.parameters(), lr=1e-3)
    fresh_scheduler = torch.optim.lr_scheduler.LambdaLR(fresh, lambda step: 1.0)
    step, schedule = load_checkpoint(tmp_path / "checkpoint", grit, fresh, fresh_scheduler, Processes())
    assert (step, schedule) == (5, {"total": 9, "elapsed_s": 1.5})
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
    saved = optimizer.state_dict()["state"]
    for index, values in fresh.state_dict()["state"].items():
        torch.testing.assert_close(values["exp_avg"], saved[index]["exp_avg"], rtol=0, atol=0)
    assert fresh_scheduler.last_epoch == scheduler.last_epoch


_RAN = []


def _run_on_load(note):
    _RAN.append(note)


class _Payload:
    """What a hostile training_state.pt would run when unpickled."""

    def __reduce__(self):
        return (_run_on_load, ("unpickled",))


def test_a_checkpoint_holding_code_is_refused_unrun(tmp_path):
    from gritkit.training.checkpoint import load_checkpoint

    (tmp_path / "checkpoint").mkdir()
    torch.save({"step": 1, "payload": _Payload()}, tmp_path / "checkpoint" / "training_state.pt")
    with pytest.raises(ValueError, match="training_state.pt: cannot be read as plain data"):
        load_checkpoint(tmp_path / "checkpoint", None, None, None, Processes())
    assert _RAN == []
