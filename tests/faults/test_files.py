"""Faults in reading and writing user files: nothing a user wrote is replaced unasked, and a bad
file is one line that names it and says what is wrong."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from gritkit.cli import main
from gritkit.model.gritlm import GritLM
from gritkit.rag import RagIndex

TINY = ["--vocab-size", "300", "--hidden-size", "32", "--layers", "1", "--heads", "2"]


@pytest.fixture
def users_dir(tmp_path):
    """A directory a user filled with their own files: it must survive every writer unless told."""
    path = tmp_path / "mine"
    (path / "sub").mkdir(parents=True)
    (path / "important.txt").write_text("keep me")
    (path / "sub" / "notes.txt").write_text("and me")
    return path


def assert_untouched(path) -> None:
    assert sorted(p.name for p in path.iterdir()) == ["important.txt", "sub"]
    assert (path / "important.txt").read_text() == "keep me"
    assert (path / "sub" / "notes.txt").read_text() == "and me"


def one_error_line(capsys, command: str) -> str:
    """The single stderr line of a failed command, without its ``gritkit COMMAND: error:`` prefix."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    prefix = f"gritkit {command}: error: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0][len(prefix):]


@pytest.fixture(scope="module")
def index_dir(tiny_llama, corpus, tmp_path_factory):
    """A saved index of five documents with doc caches."""
    root = tmp_path_factory.mktemp("faults-index")
    index = RagIndex.build(tiny_llama, corpus[:5], cache_docs=True, cache_dir=root / "cache")
    return index.save(root / "index")


def _truncate(path, keep) -> None:
    """Cut ``path`` to ``keep`` bytes (an int) or to that fraction of its size (a float)."""
    data = path.read_bytes()
    path.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])


# ------------------------------------------------------------------ 1. a user's directory is never replaced unasked

def test_save_pretrained_keeps_a_directory_of_other_files(tiny_llama, users_dir):
    with pytest.raises(FileExistsError, match=r"mine is not empty and is not a model directory "
                                              r"\(holds important.txt, sub/\).*overwrite"):
        tiny_llama.save_pretrained(users_dir)
    assert_untouched(users_dir)
    tiny_llama.save_pretrained(users_dir, overwrite=True)
    assert (users_dir / "gritkit_config.json").is_file() and not (users_dir / "important.txt").exists()
    tiny_llama.save_pretrained(users_dir)  # an earlier model is this writer's own output: replaced
    assert sorted(p.name for p in users_dir.parent.iterdir()) == ["mine"]  # no temporary left


def test_save_pretrained_refuses_a_file_where_the_directory_goes(tiny_llama, tmp_path):
    target = tmp_path / "model"
    target.write_text("a file")
    with pytest.raises(FileExistsError, match="model exists and is not a directory"):
        tiny_llama.save_pretrained(target, overwrite=True)
    assert target.read_text() == "a file"


def test_index_save_keeps_a_directory_of_other_files(tiny_llama, corpus, users_dir, tmp_path):
    index = RagIndex.build(tiny_llama, corpus[:3])
    with pytest.raises(FileExistsError, match=r"mine is not empty and is not a gritkit index "
                                              r"\(holds important.txt, sub/\)"):
        index.save(users_dir)
    assert_untouched(users_dir)
    model_dir = tmp_path / "model"
    tiny_llama.save_pretrained(model_dir)
    with pytest.raises(FileExistsError, match="not a gritkit index"):  # a model is not an index
        index.save(model_dir)
    index.save(users_dir, overwrite=True)
    index.save(users_dir)  # an earlier index: replaced
    assert RagIndex.load(users_dir).documents == corpus[:3]


def test_cli_tiny_refuses_a_directory_of_other_files_before_building(users_dir, monkeypatch, capsys):
    import gritkit.model.tiny

    def never(*args, **kwargs):
        raise AssertionError("the tokenizer was trained before the output was checked")

    monkeypatch.setattr(gritkit.model.tiny, "train_tokenizer", never)
    assert main(["tiny", "--out", str(users_dir), *TINY]) == 2
    error = one_error_line(capsys, "tiny")
    assert error.startswith(f"{users_dir} is not empty and is not a model directory (holds important.txt, sub/)")
    assert "--overwrite" in error
    assert_untouched(users_dir)


def test_cli_tiny_overwrite_replaces_and_a_rerun_replaces_its_own_model(users_dir):
    assert main(["tiny", "--out", str(users_dir), "--overwrite", *TINY]) == 0
    assert not (users_dir / "important.txt").exists()
    assert main(["tiny", "--out", str(users_dir), *TINY]) == 0
    assert GritLM.from_pretrained(users_dir, device="cpu").embedding_dim == 32


def test_cli_rag_index_refuses_a_directory_of_other_files_before_embedding(tiny_llama_dir, corpus, users_dir,
                                                                           tmp_path, monkeypatch, capsys):
    source = tmp_path / "docs.txt"
    source.write_text("\n".join(corpus[:3]) + "\n")

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    with monkeypatch.context() as patch:
        patch.setattr(GritLM, "from_pretrained", never)
        args = ["rag", "index", "--model", str(tiny_llama_dir), "--corpus", str(source), "--out", str(users_dir)]
        assert main(args) == 2
    assert one_error_line(capsys, "rag").startswith(f"{users_dir} is not empty and is not a gritkit index")
    assert_untouched(users_dir)
    assert main([*args, "--overwrite"]) == 0
    assert main(args) == 0  # its own index: replaced
    assert RagIndex.load(users_dir).documents == corpus[:3]


# ------------------------------------------------------------------ 2. a bad file is one line naming it

@pytest.mark.parametrize("keep", [0.5, 0, 12])  # the data, all, the header cut
def test_truncated_safetensors_names_the_file(tiny_llama_dir, tmp_path, keep, capsys):
    model = tmp_path / "m"
    shutil.copytree(tiny_llama_dir, model)
    _truncate(model / "model.safetensors", keep)
    with pytest.raises(ValueError, match=rf"^{model}/model.safetensors is truncated or not a safetensors file "
                                         r"\(.+\); re-save or re-download the model$"):
        GritLM.from_pretrained(model, device="cpu")
    source = tmp_path / "t.txt"
    source.write_text("a text\n")
    assert main(["embed", "--model", str(model), "--input", str(source), "--output", str(tmp_path / "v.npy")]) == 2
    assert one_error_line(capsys, "embed").startswith(f"{model}/model.safetensors is truncated")


def test_model_without_a_tokenizer_says_so(tiny_llama_dir, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(tiny_llama_dir, model)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model / name).unlink()
    with pytest.raises(ValueError, match=rf"^{model} has no tokenizer \(tokenizer.json / tokenizer_config.json "
                                         r"missing\)"):
        GritLM.from_pretrained(model, device="cpu")


def test_truncated_tokenizer_names_the_file(tiny_llama_dir, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(tiny_llama_dir, model)
    _truncate(model / "tokenizer.json", 0.5)
    with pytest.raises(ValueError, match=rf"^{model}/tokenizer.json cannot be read \(.+\); re-save or re-download"):
        GritLM.from_pretrained(model, device="cpu")


@pytest.mark.parametrize("name", ["index.json", "documents.jsonl"])
def test_truncated_index_settings_or_documents_name_the_file(index_dir, tmp_path, name):
    index = tmp_path / "idx"
    shutil.copytree(index_dir, index)
    _truncate(index / name, 0.5)
    with pytest.raises(ValueError, match=rf"^{index / name}(:\d+)? is truncated or corrupt .*; rebuild the index"):
        RagIndex.load(index)


@pytest.mark.parametrize("name", ["embeddings.npy", "doc_cache/kv.npy", "doc_cache/offsets.npy"])
@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_truncated_index_file_names_the_file_and_says_rebuild(index_dir, tmp_path, name, keep, capsys):
    index = tmp_path / "idx"
    shutil.copytree(index_dir, index)
    _truncate(index / name, keep)
    with pytest.raises(ValueError, match=rf"^{index / name} is truncated or corrupt .*; rebuild the index"):
        RagIndex.load(index)
    assert main(["rag", "ask", "--index", str(index), "a question"]) == 2
    assert one_error_line(capsys, "rag").startswith(f"{index / name} is truncated or corrupt")


def test_embed_input_that_is_a_directory(tiny_llama_dir, tmp_path, capsys):
    assert main(["embed", "--model", str(tiny_llama_dir), "--input", str(tmp_path),
                 "--output", str(tmp_path / "v.npy")]) == 2
    assert one_error_line(capsys, "embed") == f"input {tmp_path} is a directory, not a file"


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_embed_input_with_invalid_utf8_names_file_line_and_byte(tiny_llama_dir, tmp_path, suffix, capsys):
    source = tmp_path / f"texts{suffix}"
    lines = [b"first", b"second"] if suffix == ".txt" else [b'"first"', b'"second"']
    source.write_bytes(lines[0] + b"\n" + lines[1] + b"\n" + b'"caf\xe9"\n')
    output = tmp_path / "v.npy"
    assert main(["embed", "--model", str(tiny_llama_dir), "--input", str(source), "--output", str(output)]) == 2
    offset = len(lines[0]) + len(lines[1]) + 2 + 4
    assert one_error_line(capsys, "embed") == (f"{source}:3: not valid UTF-8 (byte 0xe9 at byte offset {offset}); "
                                               "save the file as UTF-8")
    assert not output.exists()


def test_embed_of_an_empty_input_is_refused_and_keeps_the_output(tiny_llama_dir, tmp_path, capsys):
    source = tmp_path / "empty.txt"
    source.write_text("\n  \n")
    output = tmp_path / "v.npy"
    assert main(["embed", "--model", str(tiny_llama_dir), "--input", str(source), "--output", str(output)]) == 2
    assert one_error_line(capsys, "embed") == f"no texts in {source}"
    assert not output.exists()
    np.save(output, np.ones((2, 3)))
    assert main(["embed", "--model", str(tiny_llama_dir), "--input", str(source), "--output", str(output)]) == 2
    np.testing.assert_array_equal(np.load(output), np.ones((2, 3)))


@pytest.mark.parametrize("data, error", [
    (b"\n \n", "no texts on standard input"),
    (b"fine\nnot \xff fine\n", "standard input:2: not valid UTF-8 (byte 0xff at byte offset 9); save the file as UTF-8"),
])
def test_embed_of_bad_standard_input_is_one_line(tiny_llama_dir, tmp_path, monkeypatch, capsys, data, error):
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    output = tmp_path / "v.npy"
    assert main(["embed", "--model", str(tiny_llama_dir), "--output", str(output)]) == 2
    assert one_error_line(capsys, "embed") == error
    assert not output.exists()


# ------------------------------------------------------------------ 3. an output is replaced whole or not at all

def test_embed_output_is_replaced_atomically(tiny_llama_dir, tmp_path, monkeypatch):
    """A write that fails half-way leaves the previous output as it was, and no temporary file."""
    source = tmp_path / "t.txt"
    source.write_text("one\ntwo\n")
    output = tmp_path / "v.npy"
    np.save(output, np.ones((2, 3)))

    def fail_half_way(handle, array):
        handle.write(b"\x93NUMPY partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", fail_half_way)
    assert main(["embed", "--model", str(tiny_llama_dir), "--input", str(source), "--output", str(output)]) == 2
    monkeypatch.undo()
    np.testing.assert_array_equal(np.load(output), np.ones((2, 3)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt", "v.npy"]
