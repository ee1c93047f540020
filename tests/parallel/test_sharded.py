"""Embedding in shards (gritkit/parallel/sharded.py): planning, resuming, stale pieces, merging, and the
commands under torchrun (real: two gloo processes; simulated: one process told its rank)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from gritkit.parallel import sharded
from gritkit.cli import main
from gritkit.parallel.distributed import Processes
from gritkit.model.gritlm import GritLM
from gritkit.rag import RagIndex
from gritkit.parallel.sharded import ShardWork, Team, plan

TEXTS = [f"text number {i} " + "word " * (i % 4) for i in range(7)]


class ToyEmbedder:
    """Vectors that differ for every text, and a count of the texts embedded."""

    def __init__(self):
        self.embedded = 0

    def __call__(self, texts, directory):
        self.embedded += len(texts)
        return vectors_of(texts)


def vectors_of(texts):
    return np.array([[len(t), sum(map(ord, t))] for t in texts], dtype=np.float32)


def test_plan_cuts_contiguous_shards_into_chunks():
    pieces = plan(10, 3, 2)
    assert [(p.start, p.end) for p in pieces] == [(0, 2), (2, 3), (3, 5), (5, 6), (6, 8), (8, 10)]
    assert [p.name for p in pieces][:2] == ["shard-0-of-3.chunk-0", "shard-0-of-3.chunk-1"]
    assert [sum(len(p) for p in pieces if p.shard == s) for s in range(3)] == [3, 3, 4]
    assert [(p.shard, p.start, p.end) for p in plan(2, 3, 5)] == [(1, 0, 1), (2, 1, 2)]  # shard 0 is empty


def test_pieces_written_by_two_ranks_merge_into_the_vectors_of_all(tmp_path):
    work = ShardWork(tmp_path / "out.npy", TEXTS, {"model": "a"}, chunk_documents=2)
    work.prepare(2)
    missing = work.missing()
    assert [p.shard for p in work.assigned(missing, 1, 2)] == [1, 1]  # documents 3..6 in chunks of 2
    embed = ToyEmbedder()
    for rank in (1, 0):
        for piece in work.assigned(missing, rank, 2):
            work.compute(piece, embed)
    merged = work.merge(lambda vectors, pieces: vectors)
    np.testing.assert_array_equal(merged, vectors_of(TEXTS))
    assert embed.embedded == len(TEXTS)
    assert not work.directory.exists()


def test_a_rerun_keeps_written_pieces_and_embeds_only_the_missing(tmp_path):
    first = ShardWork(tmp_path / "out.npy", TEXTS, {"model": "a"}, chunk_documents=2)
    first.prepare(2)
    for piece in first.assigned(first.missing(), 1, 2):  # rank 1 finished, rank 0 was killed
        first.compute(piece, ToyEmbedder())
    (first.directory / ".tmp-shard-0-of-2.chunk-0-123").mkdir()  # what the killed rank was writing
    written = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in first.directory.glob("shard-*/*")}
    assert len(written) == 2

    rerun = ShardWork(tmp_path / "out.npy", TEXTS, {"model": "a"}, chunk_documents=500)  # layout is the manifest's
    assert rerun.resumable()
    rerun.prepare(1)  # one process finishes the run of two
    assert not list(rerun.directory.glob(".tmp-*"))
    missing = rerun.missing()
    assert [(p.start, p.end) for p in rerun.assigned(missing, 0, 1)] == [(0, 2), (2, 3)]
    embed = ToyEmbedder()
    for piece in rerun.assigned(missing, 0, 1):
        rerun.compute(piece, embed)
    assert embed.embedded == 3
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in written} == written
    np.testing.assert_array_equal(rerun.merge(lambda vectors, pieces: vectors), vectors_of(TEXTS))


@pytest.mark.parametrize("change", ["corpus", "settings"])
def test_pieces_of_another_corpus_or_model_are_never_merged(tmp_path, change):
    old = ShardWork(tmp_path / "out.npy", TEXTS, {"model": "a"}, chunk_documents=2)
    old.prepare(2)
    for piece in old.pieces():
        old.compute(piece, ToyEmbedder())
    texts = [t.upper() for t in TEXTS] if change == "corpus" else TEXTS  # same count, other texts
    new = ShardWork(tmp_path / "out.npy", texts, {"model": "a" if change == "corpus" else "b"}, chunk_documents=2)
    assert not new.resumable()
    new.prepare(2)
    assert len(new.missing()) == len(new.pieces()) == 4
    embed = ToyEmbedder()
    for piece in new.missing():
        new.compute(piece, embed)
    assert embed.embedded == len(TEXTS)
    np.testing.assert_array_equal(new.merge(lambda vectors, pieces: vectors), vectors_of(texts))


def test_merge_names_missing_and_damaged_pieces(tmp_path):
    work = ShardWork(tmp_path / "out.npy", TEXTS, {"model": "a"}, chunk_documents=4)
    work.prepare(2)
    work.compute(work.pieces()[0], ToyEmbedder())
    with pytest.raises(FileNotFoundError, match=r"pieces shard-1-of-2\.chunk-0 are missing; run the same command"):
        work.merge(lambda vectors, pieces: vectors)
    work.compute(work.pieces()[1], lambda texts, directory: vectors_of(texts[:-1]))
    with pytest.raises(ValueError, match=r"shard-1-of-2\.chunk-0/embeddings\.npy: 3 vectors for 4 documents"):
        work.merge(lambda vectors, pieces: vectors)
    assert work.directory.is_dir()  # nothing is thrown away by a failed merge


@contextmanager
def as_rank(rank, world):
    """What join_processes gives process ``rank`` of ``world`` when every other has already passed
    each barrier (they run one after another in this test process)."""
    yield Team(Processes(rank, world), lambda: None)


@pytest.fixture
def texts_file(corpus, tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(corpus[200:210]) + "\n")
    return path, corpus[200:210]


def test_embed_killed_rank_is_finished_by_one_process(tiny_llama, tiny_llama_dir, texts_file, tmp_path,
                                                      monkeypatch, capsys):
    source, texts = texts_file
    output = tmp_path / "v.npy"
    command = ["embed", "--model", str(tiny_llama_dir), "--input", str(source), "--output", str(output)]
    monkeypatch.setattr(sharded, "CHUNK_DOCUMENTS", 2)  # each rank's 5 documents in chunks of 2, 2, 1
    encode, embedded = GritLM.encode, []

    def counting_encode(self, part, **kwargs):
        embedded.append(len(part))
        if kill_at is not None and len(embedded) == kill_at:
            raise KeyboardInterrupt
        return encode(self, part, **kwargs)

    monkeypatch.setattr(GritLM, "encode", counting_encode)
    monkeypatch.setattr(sharded, "join_processes", lambda: as_rank(0, 2))
    kill_at = 2
    assert main(command) == 130  # rank 0 killed in its second chunk
    kill_at = None
    monkeypatch.setattr(sharded, "join_processes", lambda: as_rank(1, 2))
    assert main(command) == 0 and not output.exists()  # rank 1 writes its pieces, rank 0 merges
    assert len(list((tmp_path / ".v.npy.shards").glob("shard-*"))) == 4

    monkeypatch.undo()  # one process, no torchrun: the same command finishes the run
    monkeypatch.setattr(GritLM, "encode", counting_encode)
    embedded.clear()
    capsys.readouterr()
    assert main(command) == 0
    assert embedded == [2, 1]  # only rank 0's last two chunks
    err = capsys.readouterr().err
    assert "resuming from" in err and "7 of 10 documents already embedded" in err
    assert "embedded 3 documents in" in err
    np.testing.assert_allclose(np.load(output), tiny_llama.encode(texts), atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["texts.txt", "v.npy"]


def test_rag_index_with_doc_caches_merges_the_ranks_stores(tiny_llama, tiny_llama_dir, texts_file, tmp_path,
                                                          monkeypatch, capsys):
    source, texts = texts_file
    command = ["rag", "index", "--model", str(tiny_llama_dir), "--corpus", str(source), "--cache-docs",
               "--cache-dtype", "float32", "--query-instruction", "Find"]
    assert main(command + ["--out", str(tmp_path / "one")]) == 0
    monkeypatch.setattr(sharded, "CHUNK_DOCUMENTS", 3)
    monkeypatch.setattr(sharded, "join_processes", lambda: as_rank(0, 2))
    capsys.readouterr()
    # rank 0 reaches the merge before (simulated) rank 1 has written anything: a clear error, pieces kept
    assert main(command + ["--out", str(tmp_path / "two")]) == 2
    assert "pieces shard-1-of-2.chunk-0, shard-1-of-2.chunk-1 are missing" in capsys.readouterr().err
    monkeypatch.setattr(sharded, "join_processes", lambda: as_rank(1, 2))
    assert main(command + ["--out", str(tmp_path / "two")]) == 0
    monkeypatch.undo()
    assert main(command + ["--out", str(tmp_path / "two")]) == 0  # merges, embeds nothing
    assert "embedded 0 documents" in capsys.readouterr().err
    one, two = RagIndex.load(tmp_path / "one"), RagIndex.load(tmp_path / "two")
    assert two.documents == one.documents == texts
    assert two.settings == one.settings
    np.testing.assert_allclose(two.embeddings, one.embeddings, atol=1e-5)
    for name in ("kv", "tokens", "offsets"):
        np.testing.assert_allclose(getattr(two.doc_caches, name), getattr(one.doc_caches, name), atol=1e-5)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_concatenated_store_holds_each_pieces_caches(tiny_llama, corpus, tmp_path, dtype):
    from gritkit.rag.storage import concatenate_stores

    parts = [corpus[300:303], corpus[303:305]]
    stores = [RagIndex.build(tiny_llama, part, cache_docs=True, cache_dir=tmp_path / f"part{i}",
                             cache_dtype=dtype).doc_caches for i, part in enumerate(parts)]
    merged = concatenate_stores([store.directory for store in stores], tmp_path / "merged")
    assert len(merged) == 5 and merged.dtype == dtype and merged.bytes_per_token == stores[0].bytes_per_token
    pairs = [(store, i) for store in stores for i in range(len(store))]
    for index, (store, i) in enumerate(pairs):
        got, want = merged[index], store[i]
        assert got.token_ids == want.token_ids
        assert torch.equal(got.keys, want.keys) and torch.equal(got.values, want.values)


def test_one_process_ignores_pieces_of_other_settings(tiny_llama, tiny_llama_dir, texts_file, tmp_path, capsys):
    source, texts = texts_file
    stale = ShardWork(tmp_path / "v.npy", texts, {"model": "another"})
    stale.prepare(2)
    for piece in stale.pieces():
        stale.compute(piece, lambda part, directory: np.zeros((len(part), 64), dtype=np.float32))
    assert main(["embed", "--model", str(tiny_llama_dir), "--input", str(source), "--output",
                 str(tmp_path / "v.npy")]) == 0
    assert "ignoring" in capsys.readouterr().err
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), tiny_llama.encode(texts), atol=1e-6)


def test_torchrun_refuses_stdin_and_stdout(tiny_llama_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")  # refused before any process group is joined
    assert main(["embed", "--model", str(tiny_llama_dir), "--input", "-", "--output", str(tmp_path / "v.npy")]) == 2
    assert capsys.readouterr().err.strip() == (
        "gritkit embed: error: under torchrun --input and --output must be files, not '-' (stdin/stdout): "
        "every process reads the input, and the pieces are kept beside the output")
    assert not any(tmp_path.iterdir())


def torchrun_cli(*args) -> str:
    """Run ``gritkit ARGS`` as two torchrun processes (gloo, CPU); return their stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                             "-m", "gritkit.cli", *args], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


@pytest.mark.slow
def test_two_processes_embed_what_one_does(tiny_llama, tiny_llama_dir, texts_file, tmp_path):
    source, texts = texts_file
    err = torchrun_cli("embed", "--model", str(tiny_llama_dir), "--input", str(source),
                       "--output", str(tmp_path / "v.jsonl"), "--instruction", "Find")
    assert "embedded 10 documents in" in err and "documents/s" in err
    rows = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(10))
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]),
                               tiny_llama.encode(texts, instruction="Find"), atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["texts.txt", "v.jsonl"]


@pytest.mark.slow
def test_two_processes_index_what_one_does(tiny_llama, tiny_llama_dir, texts_file, tmp_path):
    source, texts = texts_file
    common = ["--model", str(tiny_llama_dir), "--corpus", str(source), "--cache-docs", "--cache-dtype", "float32"]
    torchrun_cli("rag", "index", *common, "--out", str(tmp_path / "two"))
    assert main(["rag", "index", *common, "--out", str(tmp_path / "one")]) == 0
    one, two = RagIndex.load(tmp_path / "one"), RagIndex.load(tmp_path / "two")
    assert two.documents == one.documents == texts and two.settings == one.settings
    np.testing.assert_allclose(two.embeddings, one.embeddings, atol=1e-5)
    for name in ("kv", "tokens", "offsets"):
        np.testing.assert_allclose(getattr(two.doc_caches, name), getattr(one.doc_caches, name), atol=1e-5)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
