"""End-to-end training on data/tiny: losses fall, schedule, checkpoint loads, SIGKILL + resume, LoRA merge."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gritkit.training.config import load_config
from gritkit.training.schedule import lr_factor
from gritkit.training.loop import train

REPO = Path(__file__).resolve().parents[2]
TINY = ["vocab_size=500", "hidden_size=32", "num_layers=2", "embedding_batch_size=4", "embedding_chunk_size=2",
        "generative_batch_size=4", "generative_micro_batch_size=2", "query_max_length=32", "passage_max_length=48",
        "generative_max_length=48", "bf16=false", "progress_bar=false", "max_steps=8", "save_every=3",
        "learning_rate=0.003", "temperature=0.05", "threads=2"]


def tiny_args(output_dir, *extra) -> list[str]:
    """`gritkit train` arguments of the tiny run: the config file, then its overrides."""
    return [str(REPO / "configs/tiny.yaml"), *TINY, f"output_dir={output_dir}", *extra]


def tiny_config(output_dir, *extra):
    path, *overrides = tiny_args(output_dir, *extra)
    return load_config(path, overrides)


def read_metrics(output_dir):
    return [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "run"
    summary = train(tiny_config(out))
    return out, summary


def test_unified_run_lowers_both_losses_and_follows_the_schedule(finished_run):
    out, summary = finished_run
    metrics = read_metrics(out)
    assert [m["step"] for m in metrics] == list(range(1, 9))
    for key in ("loss_rep", "loss_gen"):  # batches differ from step to step: compare halves of the run
        values = [m[key] for m in metrics]
        assert sum(values[4:]) < sum(values[:4]), key
    assert [m["lr"] for m in metrics] == pytest.approx([0.003 * lr_factor(s, 8, 0.03) for s in range(8)])
    assert summary["loss_rep"] == metrics[-1]["loss_rep"] and summary["final"] == str(out / "final")


def test_final_checkpoint_embeds_and_generates_through_gritlm(finished_run, tmp_path):
    from gritkit.model.gritlm import GritLM

    out, _ = finished_run
    grit = GritLM.from_pretrained(out / "final")
    vectors = grit.encode(["a query", "json.dumps"], instruction="Find it")
    assert vectors.shape == (2, 32)
    assert isinstance(grit.generate("What does json.dumps do?", max_new_tokens=4), str)
    # the checkpoint written at step 6 holds the model of step 6 in the same format
    resumed = GritLM.from_pretrained(out / "checkpoint")
    assert torch.load(out / "checkpoint" / "training_state.pt", weights_only=True)["step"] == 6
    assert resumed.encode(["a query"]).shape == (1, 32)


def test_refuses_to_overwrite_a_run(finished_run):
    out, _ = finished_run
    with pytest.raises(ValueError, match="already holds a run"):
        train(tiny_config(out))


CAUSAL = ("attention=causal", "pooling=last_token", "query_instruction=Find the manual page")


@pytest.fixture(scope="module")
def causal_run(tmp_path_factory):
    """The tiny run with the ablation's causal attention and last-token pooling."""
    out = tmp_path_factory.mktemp("train") / "causal"
    return out, train(tiny_config(out, *CAUSAL))


def test_causal_run_saves_its_settings_in_final_and_checkpoint(causal_run):
    from gritkit import GritConfig, GritLM

    out, _ = causal_run
    expected = GritConfig(pooling="last_token", attention="causal", query_instruction="Find the manual page")
    for directory in ("final", "checkpoint"):
        model = GritLM.from_pretrained(out / directory)
        assert model.config == expected, directory
    # the saved model embeds causally: the state of the first text token ignores the last token
    model = GritLM.from_pretrained(out / "final").with_config(pooling="cls")
    first = model.encode(["sort a list in place", "sort a list in time"])
    np.testing.assert_allclose(first[0], first[1], atol=1e-6)


KILLER = """
import os, signal, sys
from gritkit.training.config import load_config
from gritkit.training.loop import train
from gritkit.training.metrics import Callback

class DieAtStep5(Callback):
    def on_step(self, record):
        if record["step"] == 5:  # two steps after the checkpoint of step 3: that progress is lost
            os.kill(os.getpid(), signal.SIGKILL)

train(load_config(sys.argv[1], sys.argv[2:]), callbacks=[DieAtStep5()])
"""


@pytest.mark.slow
@pytest.mark.parametrize("settings", [(), CAUSAL], ids=["grit", "causal-last-token"])
def test_sigkilled_run_resumes_to_the_same_losses(settings, request, tmp_path):
    out, _ = request.getfixturevalue("causal_run" if settings else "finished_run")
    killed = tmp_path / "killed"
    result = subprocess.run([sys.executable, "-c", KILLER, *tiny_args(killed, *settings)], capture_output=True,
                            text=True, timeout=300, cwd=REPO)
    assert result.returncode == -9, result.stderr[-2000:]
    assert len(read_metrics(killed)) == 5
    train(tiny_config(killed, *settings, "resume=true"))
    expected, got = read_metrics(out), read_metrics(killed)
    assert [m["step"] for m in got] == list(range(1, 9))
    for a, b in zip(expected, got):  # to float32 rounding: kernels may sum in another order across processes
        assert b["loss_rep"] == pytest.approx(a["loss_rep"], rel=1e-6)
        assert b["loss_gen"] == pytest.approx(a["loss_gen"], rel=1e-6)
    from safetensors.torch import load_file

    final_a, final_b = load_file(out / "final" / "model.safetensors"), load_file(killed / "final" / "model.safetensors")
    for name, tensor in final_a.items():
        torch.testing.assert_close(final_b[name], tensor, atol=1e-6, rtol=0)
    from gritkit import GritLM

    assert GritLM.from_pretrained(killed / "final").config == GritLM.from_pretrained(out / "final").config


def test_lora_checkpoint_is_merged_and_loads_with_gritlm(tiny_llama, tmp_path):
    from peft import LoraConfig, get_peft_model

    from gritkit.training.checkpoint import save_model
    from gritkit.parallel.distributed import Processes
    from gritkit.model.gritlm import GritLM

    grit = copy.copy(tiny_llama)
    grit.model = get_peft_model(copy.deepcopy(tiny_llama.model),
                                LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in grit.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    texts = ["Return the sum of two numbers.", "Open a file"]
    expected = grit.encode(texts, instruction="Find it")
    assert not torch.allclose(torch.tensor(expected), torch.tensor(tiny_llama.encode(texts, instruction="Find it")))
    save_model(grit, tmp_path / "merged", Processes())
    loaded = GritLM.from_pretrained(tmp_path / "merged")
    assert not any("lora" in key for key in loaded.model.state_dict())
    torch.testing.assert_close(torch.tensor(loaded.encode(texts, instruction="Find it")), torch.tensor(expected),
                               atol=1e-5, rtol=1e-4)
    ids = torch.tensor([loaded.chat_input_ids("What is it?")])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, grit.model(ids).logits, atol=1e-4, rtol=1e-4)


def test_missing_tokenizer_directory_stops_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="tokenizer='.*nowhere' is not a tokenizer directory"):
        train(tiny_config(out, f"tokenizer={tmp_path / 'nowhere'}"))
    assert not out.exists()


def test_embedding_every_puts_the_next_contrastive_batch_on_every_nth_step(tmp_path):
    # Learning rate 0: the weights never move, so each step's losses depend on its batches alone.
    still = ["learning_rate=0", "save_every=0"]
    train(tiny_config(tmp_path / "every1", *still, "max_steps=2"))
    train(tiny_config(tmp_path / "every2", *still, "max_steps=4", "embedding_every=2"))
    every1, every2 = read_metrics(tmp_path / "every1"), read_metrics(tmp_path / "every2")
    assert [m["loss_rep"] for m in every2[1::2]] == [None, None]
    assert [m["loss_rep"] for m in every2[::2]] == [m["loss_rep"] for m in every1]
    assert [m["loss_gen"] for m in every2[:2]] == [m["loss_gen"] for m in every1]
    assert every2[1]["tokens"] < every2[0]["tokens"]


def test_embedding_every_needs_unified_mode(tmp_path):
    with pytest.raises(ValueError, match="embedding_every=2 needs mode=unified"):
        tiny_config(tmp_path / "run", "mode=embedding", "embedding_every=2")


def torchrun_train(processes: int, output_dir, *extra) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", "gritkit.cli", "train", *tiny_args(output_dir, *extra)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_fsdp_run_follows_the_single_process_run_and_resumes_from_its_sharded_checkpoint(finished_run, tmp_path):
    out, _ = finished_run
    sharded = tmp_path / "fsdp"
    torchrun_train(2, sharded, "parallel=fsdp")
    single, two = read_metrics(out), read_metrics(sharded)
    assert [m["step"] for m in two] == list(range(1, 9))
    for a, b in zip(single, two):  # the same global batches; only the order of float sums differs
        assert b["loss_rep"] == pytest.approx(a["loss_rep"], rel=1e-4)
        assert b["loss_gen"] == pytest.approx(a["loss_gen"], rel=1e-4)

    # A copy of the run as it stood at its step-6 checkpoint (per-rank optimiser shards) resumes to the same end.
    resumed = tmp_path / "resumed"
    shutil.copytree(sharded, resumed)
    shutil.rmtree(resumed / "final")
    torchrun_train(2, resumed, "parallel=fsdp", "resume=true")
    got = read_metrics(resumed)
    assert [m["step"] for m in got] == list(range(1, 9))
    for a, b in zip(two[6:], got[6:]):
        assert b["loss_rep"] == pytest.approx(a["loss_rep"], rel=1e-6)
        assert b["loss_gen"] == pytest.approx(a["loss_gen"], rel=1e-6)
    from safetensors.torch import load_file

    final_two, final_resumed = (load_file(d / "final" / "model.safetensors") for d in (sharded, resumed))
    final_single = load_file(out / "final" / "model.safetensors")
    assert set(final_two) == set(final_single)
    for name, tensor in final_two.items():
        torch.testing.assert_close(final_resumed[name], tensor, atol=1e-6, rtol=0)
        torch.testing.assert_close(tensor, final_single[name], atol=1e-4, rtol=0)


def test_matryoshka_sizes_must_fit_the_embedding(tmp_path):
    with pytest.raises(ValueError, match=r"matryoshka_dims \[32\] must be smaller than the model's embedding size 32"):
        train(tiny_config(tmp_path / "run", "matryoshka_dims=[32]", "max_steps=1"))
    assert not (tmp_path / "run" / "final").exists()


@pytest.mark.parametrize("settings", [("packing=true",), ("packing=true", "single_pass=true")],
                         ids=["packed", "single-pass"])
def test_packed_runs_follow_the_padded_run(finished_run, settings, tmp_path):
    """Packing changes how samples are laid out, not what is learned: the same losses step by step
    (GradCache chunks of 2 included), to the rounding that summing in another order gives."""
    out, _ = finished_run
    train(tiny_config(tmp_path / "packed", *settings, "save_every=0"))
    expected, got = read_metrics(out), read_metrics(tmp_path / "packed")
    assert [m["step"] for m in got] == list(range(1, 9))
    for a, b in zip(expected, got):
        assert b["loss_rep"] == pytest.approx(a["loss_rep"], rel=1e-4)
        assert b["loss_gen"] == pytest.approx(a["loss_gen"], rel=1e-4)
    config = json.loads((tmp_path / "packed" / "config.json").read_text())
    assert config["packing"] and config["single_pass"] == ("single_pass=true" in settings)


def test_single_pass_needs_packing_and_unified_mode(tmp_path):
    with pytest.raises(ValueError, match="single_pass .* needs packing: true and mode: unified"):
        tiny_config(tmp_path / "x", "single_pass=true")
    with pytest.raises(ValueError, match="pack_length 16 is shorter than the longest sample"):
        tiny_config(tmp_path / "x", "packing=true", "pack_length=16")
