"""The command line: embed and generate agree with the library; bad input is one clear line."""

from __future__ import annotations

import json

import numpy as np

from gritkit.cli import main


def test_embed_writes_npy_and_jsonl_equal_to_encode(tiny_llama, tiny_llama_dir, tmp_path):
    texts = ["first text", "a second, longer text", "third"]
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts) + "\n")
    assert main(["embed", "--model", str(tiny_llama_dir), "--input", str(source),
                 "--output", str(tmp_path / "v.npy"), "--instruction", "Find"]) == 0
    expected = tiny_llama.encode(texts, instruction="Find")
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), expected, atol=1e-6)

    source_jsonl = tmp_path / "texts.jsonl"
    source_jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    assert main(["embed", "--model", str(tiny_llama_dir), "--input", str(source_jsonl),
                 "--output", str(tmp_path / "v.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2]
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), tiny_llama.encode(texts), atol=1e-6)


def test_malformed_jsonl_names_file_and_line_and_writes_nothing(tiny_llama_dir, tmp_path, capsys):
    source = tmp_path / "bad.jsonl"
    source.write_text('{"text": "fine"}\n{"text": 5}\n')
    output = tmp_path / "out.npy"
    assert main(["embed", "--model", str(tiny_llama_dir), "--input", str(source), "--output", str(output)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"gritkit embed: error: {source}:2: expected a string or an object with a string 'text'"
    assert not output.exists()


def test_embed_on_a_directory_that_is_not_a_model(tmp_path, capsys):
    (tmp_path / "t.txt").write_text("x\n")
    assert main(["embed", "--model", str(tmp_path), "--input", str(tmp_path / "t.txt"), "--output", "o.npy"]) == 2
    assert capsys.readouterr().err.strip().endswith("is not a Hugging Face model directory (no config.json)")


def test_generate_prints_the_greedy_answer(tiny_llama, tiny_llama_dir, capsys):
    assert main(["generate", "--model", str(tiny_llama_dir), "--max-new-tokens", "6", "Say hi"]) == 0
    assert capsys.readouterr().out == tiny_llama.generate("Say hi", max_new_tokens=6) + "\n"
