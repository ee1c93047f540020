"""Data validation (file:line), chat loss masks, step samplers and the typed config."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from gritkit.training.config import TrainConfig, load_config
from gritkit.training.data import DataError, GenerativeExample, StepSampler, read_embedding_file, read_generative_file, tokenize_generative

REPO = Path(__file__).resolve().parents[2]
GOOD_EMB = {"query": ["Find it", "a query"], "pos": ["a doc"], "neg": ["other"]}
GOOD_GEN = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


@pytest.mark.parametrize("line, message", [
    ("{not json", "invalid JSON"),
    (json.dumps({"query": "q"}), "needs \"query\" and \"pos\""),
    (json.dumps({"query": "q", "pos": []}), "pos is empty"),
    (json.dumps({"query": "q", "pos": ["d"]}), "needs 1 hard negative"),
    (json.dumps({"query": ["i", "q", "x"], "pos": ["d"], "neg": ["n"]}), "query must be a text or an [instruction, text]"),
    (json.dumps({"query": "q", "pos": ["d"], "neg": [""]}), "neg[0] is an empty text"),
    (json.dumps({"query": "q", "pos": ["d"], "neg": ["n"], "extra": 1}), "unknown key 'extra'"),
])
def test_bad_embedding_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "emb.jsonl"
    path.write_text(json.dumps(GOOD_EMB) + "\n" + line + "\n")
    with pytest.raises(DataError) as info:
        read_embedding_file(path, negatives_needed=1)
    assert str(info.value).startswith(f"{path}:2: ")
    assert message in str(info.value)


@pytest.mark.parametrize("record, message", [
    ({"messages": [{"role": "system", "content": "x"}, {"role": "assistant", "content": "y"}]}, "user and assistant only"),
    ({"messages": [{"role": "user", "content": "x"}]}, "no assistant message"),
    ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}]}, "content must be a string"),
    ({"text": "a", "messages": []}, "exactly one key"),
    ({"text": ""}, "non-empty string"),
])
def test_bad_generative_line_names_file_and_line(tmp_path, record, message):
    path = tmp_path / "gen.jsonl"
    path.write_text(json.dumps(GOOD_GEN) + "\n\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError) as info:
        read_generative_file(path)
    assert str(info.value).startswith(f"{path}:3: ")
    assert message in str(info.value)


def test_cli_stops_before_training_and_writes_nothing(tmp_path, capsys):
    from gritkit.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(GOOD_EMB) + "\n" + json.dumps({"query": "q", "pos": "d"}) + "\n")
    out = tmp_path / "run"
    code = main(["train", str(REPO / "configs/tiny.yaml"), f"embedding_data=[{bad}]", f"output_dir={out}"])
    assert code == 2
    assert f"{bad}:2: pos must be a list of texts" in capsys.readouterr().err
    assert not out.exists()


def test_chat_loss_mask_covers_exactly_the_assistant_turns(tokenizer):
    messages = ({"role": "user", "content": "What is len?"}, {"role": "assistant", "content": "The number of items."},
                {"role": "user", "content": "And abs?"}, {"role": "assistant", "content": "The absolute value."})
    ids, mask, status = tokenize_generative(tokenizer, GenerativeExample(messages=messages), 512)
    full = tokenizer.apply_chat_template(list(messages), tokenize=False)
    assert ids == tokenizer(full, add_special_tokens=False)["input_ids"] and status == "kept"
    trained = tokenizer.decode([i for i, m in zip(ids, mask) if m])
    assert trained == "The number of items.</s>The absolute value.</s>"


def test_plain_text_is_trained_everywhere_and_ends_with_eos(tokenizer):
    ids, mask, status = tokenize_generative(tokenizer, GenerativeExample(text="Return the sum."), 512)
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert all(mask) and status == "kept"
    cut_ids, cut_mask, status = tokenize_generative(tokenizer, GenerativeExample(text="Return the sum. " * 20), 10)
    assert cut_ids == tokenizer("Return the sum. " * 20)["input_ids"][:10] and all(cut_mask) and status == "answer_cut"


def test_sampler_one_dataset_per_batch_without_repetition_in_an_epoch():
    sampler = StepSampler([10, 7], batch_size=3, seed=5)
    assert sampler.steps_per_epoch == 3 + 2
    seen = set()
    for step in range(sampler.steps_per_epoch):
        dataset, indices = sampler.batch(step)
        assert len(indices) == 3 and all(0 <= i < [10, 7][dataset] for i in indices)
        pairs = {(dataset, i) for i in indices}
        assert not pairs & seen
        seen |= pairs
    assert [StepSampler([10, 7], 3, 5).batch(s) for s in (7, 2)] == [sampler.batch(7), sampler.batch(2)]
    with pytest.raises(DataError, match="small.jsonl: 2 examples, fewer than the batch size 3"):
        StepSampler([10, 2], 3, 0, ["big.jsonl", "small.jsonl"])


def test_config_overrides_are_typed_and_checked():
    config = load_config(REPO / "configs/tiny.yaml", ["max_steps=7", "output_dir=x/y", "bf16=false", "learning_rate=1"])
    assert (config.max_steps, config.output_dir, config.bf16, config.learning_rate) == (7, "x/y", "false", 1.0)
    with pytest.raises(ValueError, match="max_steps must be int"):
        load_config(REPO / "configs/tiny.yaml", ["max_steps=many"])
    with pytest.raises(ValueError, match="unknown key 'max_step'"):
        load_config(REPO / "configs/tiny.yaml", ["max_step=3"])
    with pytest.raises(ValueError, match="mode must be one of"):
        load_config(REPO / "configs/tiny.yaml", ["mode=both"])
    assert load_config(REPO / "configs/tiny.yaml", ["matryoshka_dims=[64, 32]"]).matryoshka_dims == [64, 32]
    assert load_config(REPO / "configs/tiny.yaml", ["matryoshka_dims=16"]).matryoshka_dims == [16]
    for bad in ("[64, x]", "[true]", "[0]", "[8, 8]"):
        with pytest.raises(ValueError, match="matryoshka_dims must be"):
            load_config(REPO / "configs/tiny.yaml", [f"matryoshka_dims={bad}"])


@pytest.mark.parametrize("path", [*sorted((REPO / "configs").glob("*.yaml")), *sorted((REPO / "gritkit/recipes").glob("*.yaml"))],
                         ids=lambda p: p.name)
def test_every_config_key_is_listed_and_commented(path):
    lines = path.read_text().splitlines()
    for field in dataclasses.fields(TrainConfig):
        line = next((l for l in lines if l.startswith(f"{field.name}:")), None)
        assert line is not None, f"{path.name} does not list {field.name}"
        assert "#" in line, f"{path.name}: {field.name} has no comment"
    load_config(path)


def test_long_prompt_keeps_its_instruction_and_trains_on_exactly_the_answer(tokenizer):
    description = " ".join(f"The package provides feature number {i} for users." for i in range(60))
    instruction = "Summarise this package description in one line."
    answer = "Tools to manage packages"
    example = GenerativeExample(messages=({"role": "user", "content": f"{instruction}\n\n{description}"},
                                          {"role": "assistant", "content": answer}))
    full_ids, _, _ = tokenize_generative(tokenizer, example, 100_000)
    assert len(full_ids) > 300
    ids, mask, status = tokenize_generative(tokenizer, example, 64)
    assert status == "shortened" and len(ids) == 64
    assert tokenizer.decode([i for i, m in zip(ids, mask) if m]) == answer + tokenizer.eos_token
    text = tokenizer.decode(ids)
    assert text.startswith(f"<s><|user|>\n{instruction}\n\nThe package provides feature number 0")
    assert text.endswith(f"\n<|assistant|>\n{answer}</s>")


def test_an_answer_that_cannot_keep_half_its_tokens_is_dropped_and_counted(tokenizer):
    from gritkit.training.data import tokenize_generative_files

    long_answer = " ".join(f"step {i} of the answer" for i in range(40))
    chats = [GenerativeExample(messages=({"role": "user", "content": "Explain."}, {"role": "assistant", "content": a}))
             for a in ("Short.", long_answer)]
    assert tokenize_generative(tokenizer, chats[1], 32) == ([], [], "dropped")
    prepared = tokenize_generative_files(tokenizer, [("a.jsonl", chats), ("b.jsonl", chats[:1])], 32)
    assert prepared.counts == {"a.jsonl": {"examples": 2, "kept": 1, "shortened": 0, "answer_cut": 0, "dropped": 1},
                               "b.jsonl": {"examples": 1, "kept": 1, "shortened": 0, "answer_cut": 0, "dropped": 0}}
    assert len(prepared.items) == 2
    assert prepared.describe(32)[0] == "a.jsonl: 2 examples at 32 tokens: 0 prompts shortened, 0 answers cut, 1 dropped"


def test_trainer_reports_truncation_per_file(tmp_path):
    from gritkit.training.config import load_config
    from gritkit.training.loop import train

    lines = []
    summary = train(load_config(REPO / "configs/tiny.yaml", [
        "vocab_size=500", "hidden_size=32", "num_layers=1", "embedding_batch_size=4", "generative_batch_size=4",
        "generative_micro_batch_size=4", "generative_max_length=24", "max_steps=1", "bf16=false", "threads=1",
        "progress_bar=false", f"output_dir={tmp_path / 'run'}"]), log=lines.append)
    (counts,) = summary["truncation"].values()
    assert counts["examples"] == sum(counts[k] for k in ("kept", "shortened", "answer_cut", "dropped"))
    assert counts["shortened"] + counts["answer_cut"] + counts["dropped"] > 0  # 24 tokens is short for these chats
    assert any("prompts shortened" in line for line in lines) and summary["threads"] == 1


def test_malformed_or_missing_config_files_name_the_file(tmp_path):
    from gritkit.training.config import load_config

    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: [unified\n")
    with pytest.raises(ValueError, match=f"{bad}: not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ValueError, match="a config is a mapping"):
        load_config(bad)
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
