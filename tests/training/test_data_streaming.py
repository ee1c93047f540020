"""Training data read from the files on access: the same examples, batches, losses and checkpoints
as lists held in memory, file:line errors deep in a file, stale indexes, resuming from the run's index."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest
import torch

from gritkit.training.data import DataError, GenerativeSet, embedding_example, generative_example, read_embedding_file, read_generative_file, tokenize_generative, tokenize_generative_files
from gritkit.model.formats import FIT_STATUSES
from gritkit.training.jsonl_index import IndexedJsonl
from gritkit.training.batches import DATA_INDEX
from gritkit.training.loop import train
from tests.training.test_train import read_metrics, tiny_config

REPO = Path(__file__).resolve().parents[2]
TINY_DATA = REPO / "data/tiny"


def in_memory(path, parse) -> list:
    """What the trainer held before: every line of ``path`` decoded and parsed into one list."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [parse(json.loads(line), f"{path}:{n}") for n, line in enumerate(lines, start=1) if line.strip()]


def test_indexed_file_reads_the_examples_a_list_holds(tmp_path):
    # byte offsets, not character offsets: multi-byte texts, Windows line ends and blank lines
    records = [{"query": ["Trouve-le", f"requête n°{i} ✓"], "pos": [f"doc {i} — été"],
                "neg": [["Find it", f"n{i}"]]} for i in range(40)]
    path = tmp_path / "emb.jsonl"
    path.write_bytes(b"".join(json.dumps(r, ensure_ascii=False).encode() + (b"\r\n\n" if i % 7 else b"\n")
                              for i, r in enumerate(records)))
    dataset = read_embedding_file(path, negatives_needed=1)
    expected = in_memory(path, lambda r, where: embedding_example(r, where, 1))
    assert len(dataset) == 40 and list(dataset) == expected
    assert [dataset[i] for i in (39, 0, 17, -1)] == [expected[i] for i in (39, 0, 17, -1)]
    assert random.Random(3).sample(dataset, 5) == random.Random(3).sample(expected, 5)
    with pytest.raises(IndexError):
        dataset[40]


@pytest.mark.parametrize("kind, bad, message", [
    ("embedding", "{\"query\": \"q\", \"pos\": [\"d\"], \"neg\": [\"n\"]", "invalid JSON"),
    ("embedding", json.dumps({"query": "q", "pos": [], "neg": ["n"]}), "pos is empty"),
    ("generative", json.dumps({"messages": [{"role": "user", "content": "only a question"}]}), "no assistant message"),
])
def test_malformed_line_deep_in_a_large_file_names_its_line(tmp_path, kind, bad, message):
    good = (json.dumps({"query": ["Find it", "a query"], "pos": ["a doc"], "neg": ["other"]}) if kind == "embedding"
            else json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}))
    lines = [good if i % 50 else "" for i in range(1, 30_001)]  # blank lines count in the numbering
    lines[24_680] = bad
    path = tmp_path / f"{kind}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        read_embedding_file(path, 1) if kind == "embedding" else read_generative_file(path)
    assert str(info.value).startswith(f"{path}:24681: ") and message in str(info.value)


def test_saved_index_is_trusted_only_for_the_unchanged_file_and_the_same_checks(tmp_path, monkeypatch):
    path, index_dir = tmp_path / "emb.jsonl", tmp_path / "index"
    lines = [json.dumps({"query": f"q{i}", "pos": [f"d{i}"], "neg": [f"n{i}"]}) for i in range(6)]
    lines[3] = json.dumps({"query": "q3", "pos": ["d3"]})  # no negatives: fine unless they are needed
    path.write_text("\n".join(lines) + "\n")
    expected = list(read_embedding_file(path))
    read_embedding_file(path).save_index(index_dir)

    # A saved index for this file and these checks replaces the pass over the file.
    indexing = IndexedJsonl._index
    monkeypatch.setattr(IndexedJsonl, "_index", lambda self: pytest.fail("indexed again"))
    assert list(read_embedding_file(path, index_dir=index_dir)) == expected
    monkeypatch.setattr(IndexedJsonl, "_index", indexing)

    # Other checks: negatives are needed now, so the file is checked again, and line 4 has none.
    with pytest.raises(DataError, match=f"^{path}:4: no \"neg\" texts"):
        read_embedding_file(path, 1, index_dir)

    # The file grew: its new line is read.
    with path.open("a") as handle:
        handle.write(json.dumps({"query": "q6", "pos": ["d6"]}) + "\n")
    assert len(read_embedding_file(path, index_dir=index_dir)) == 7

    # Same size, another modification time: a line that has become invalid is caught.
    read_embedding_file(path).save_index(index_dir)
    before = path.stat()
    path.write_text(path.read_text().replace('"pos": ["d2"]', '"pos": [    ]'))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert path.stat().st_size == before.st_size
    with pytest.raises(DataError, match=f"^{path}:3: pos is empty"):
        read_embedding_file(path, index_dir=index_dir)


def test_a_file_changed_after_it_was_indexed_is_refused_on_access(tmp_path):
    path = tmp_path / "gen.jsonl"
    path.write_text(json.dumps({"text": "first"}) + "\n" + json.dumps({"text": "second"}) + "\n")
    dataset = read_generative_file(path)
    assert dataset[1].text == "second"
    path.write_text(json.dumps({"text": "a longer first line"}) + "\n" + json.dumps({"text": "second"}) + "\n")
    with pytest.raises(DataError, match=f"^{path}: changed since it was indexed"):
        dataset[1]


def test_tokenised_chats_are_stored_as_tokenize_generative_returns_them(tokenizer):
    chats = read_generative_file(TINY_DATA / "chat.jsonl")
    prepared = tokenize_generative_files(tokenizer, [("chat", chats)], 48)
    results = [tokenize_generative(tokenizer, chat, 48)
               for chat in in_memory(TINY_DATA / "chat.jsonl", generative_example)]
    kept = [(ids, mask) for ids, mask, status in results if status != "dropped"]
    assert 0 < len(kept) < len(results)  # 48 tokens drops some of these chats
    assert len(prepared.items) == len(kept) and list(prepared.items) == kept
    ids, mask = prepared.items[-1]
    assert type(ids[0]) is int and type(mask[0]) is bool


# ---------------------------------------------------------------------------------- the trainer
DATA_FILES = ("names.jsonl", "details.jsonl", "chat.jsonl")
SHORT = ("max_steps=3", "save_every=2")


def copied_data(directory: Path) -> list[str]:
    """data/tiny copied to ``directory`` (so that a test may change it); returns the config overrides."""
    directory.mkdir()
    for name in DATA_FILES:
        shutil.copy(TINY_DATA / name, directory / name)
    return [f"embedding_data=[{directory / DATA_FILES[0]}, {directory / DATA_FILES[1]}]",
            f"generative_data=[{directory / DATA_FILES[2]}]"]


class HeldList(list):
    """A dataset held whole in memory, as the trainer held every dataset before; nothing to save."""

    def save_index(self, directory) -> None:
        pass


def load_into_lists(config, index_dir=None):
    negatives = config.train_group_size - 1
    embedding = [HeldList(in_memory(p, lambda r, where: embedding_example(r, where, negatives)))
                 for p in config.embedding_data]
    generative = [(p, HeldList(in_memory(p, generative_example))) for p in config.generative_data]
    assert not config.doc_cache_data  # the tiny run has no doc-cache stream to hold
    return embedding, generative, []


def tokenize_into_lists(tokenizer, files, max_length, progress=False):
    """What the trainer held before: every kept chat as a pair of lists, and the fit status counts."""
    items, counts = [], {}
    for name, examples in files:
        results = [tokenize_generative(tokenizer, e, max_length) for e in examples]
        counts[name] = {"examples": len(results), **{s: sum(r[2] == s for r in results) for s in FIT_STATUSES}}
        items += [(ids, mask) for ids, mask, status in results if status != "dropped"]
    return GenerativeSet(items, counts)


@pytest.fixture(scope="module")
def streamed_run(tmp_path_factory):
    """(data directory, its config overrides, output directory) of a 3-step run on a copy of
    data/tiny, with a checkpoint at step 2."""
    root = tmp_path_factory.mktemp("streamed")
    data = copied_data(root / "data")
    train(tiny_config(root / "run", *SHORT, *data))
    return root / "data", data, root / "run"


def test_streamed_data_give_the_losses_and_weights_of_lists_in_memory(streamed_run, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    _, data, streamed = streamed_run
    monkeypatch.setattr("gritkit.training.loop.load_data", load_into_lists)
    monkeypatch.setattr("gritkit.training.loop.tokenize_generative_files", tokenize_into_lists)
    train(tiny_config(tmp_path / "lists", *SHORT, *data))
    got, expected = read_metrics(streamed), read_metrics(tmp_path / "lists")
    assert len(got) == 3
    for key in ("loss_rep", "loss_gen", "tokens"):  # the same batches: exactly the same numbers
        assert [m[key] for m in got] == [m[key] for m in expected], key
    for directory in ("final", "checkpoint"):
        weights, reference = (load_file(run / directory / "model.safetensors")
                              for run in (streamed, tmp_path / "lists"))
        assert weights.keys() == reference.keys()
        assert all(torch.equal(weights[name], reference[name]) for name in weights), directory


def test_resumed_run_reads_its_saved_index_and_rechecks_a_changed_file(streamed_run, tmp_path, monkeypatch):
    data_dir, data, streamed = streamed_run
    resumed = tmp_path / "resumed"
    shutil.copytree(streamed, resumed)
    assert sorted(p.name.split(".jsonl-")[0] for p in (resumed / DATA_INDEX).iterdir()) == ["chat", "details", "names"]

    indexing = IndexedJsonl._index
    monkeypatch.setattr(IndexedJsonl, "_index", lambda self: pytest.fail(f"{self.path} indexed again"))
    summary = train(tiny_config(resumed, *SHORT, *data, "resume=true"))  # from the checkpoint of step 2
    assert summary["steps"] == 3
    assert read_metrics(resumed) == [{**m, "tokens_per_s": r["tokens_per_s"]}
                                     for m, r in zip(read_metrics(streamed), read_metrics(resumed))]

    monkeypatch.setattr(IndexedJsonl, "_index", indexing)
    chats = data_dir / "chat.jsonl"
    original = chats.read_text()
    chats.write_text(original + json.dumps({"messages": []}) + "\n")
    try:
        with pytest.raises(DataError, match=f"^{chats}:{len(original.splitlines()) + 1}: messages must be a non-empty"):
            train(tiny_config(resumed, *SHORT, *data, "resume=true"))
    finally:  # the module's other test reads these files too
        chats.write_text(original)
