"""The data builder: shipped copies intact, split by source item, no evaluation text in training, determinism."""

from __future__ import annotations

import gzip
import json
import math
import shutil

import pytest

from gritkit.datasets import build
from gritkit.datasets.common import read_jsonl, stable_fraction, write_jsonl
from gritkit.datasets.debian import long_description, records_from_lists
from gritkit.datasets.sources import SOURCES, load_source, ship
from gritkit.datasets.wordnet import parse_line
from tests.conftest import SUBSET

def test_shipped_sources_match_their_checksums_and_size_budget():
    from gritkit.datasets.common import DATA_DIR

    total = 0
    for name in SOURCES:
        records = load_source(name)  # raises if the sha256 differs from SOURCES.json
        assert len(records) == json.loads((DATA_DIR / "SOURCES.json").read_text())["sources"][name]["records"]
        total += (DATA_DIR / f"{name}.jsonl.gz").stat().st_size
    assert total < 8 * 2**20


def _training_strings(out):
    strings = []
    for path in sorted((out / "contrastive").glob("*.jsonl")):
        for r in read_jsonl(path, ("query", "pos", "neg")):
            strings.extend([r["query"][1], *r["pos"], *r["neg"]])
    for path in sorted((out / "generative").glob("*.jsonl")):
        for r in read_jsonl(path, ("messages",)):
            strings.extend(m["content"] for m in r["messages"])
    return strings


def _evaluation_strings(out):
    strings = []
    for path in sorted((out / "eval").glob("*.json")):
        task = json.loads(path.read_text())
        if task["kind"] == "retrieval":
            strings.extend(task["queries"].values())
            if task["name"] != "wordnet-reverse-dictionary":  # its documents are bare words, shared by design
                strings.extend(task["corpus"].values())
        elif task["kind"] == "labelled":
            strings.extend(task["texts"])
        elif task["kind"] == "summary":
            strings.extend(s for item in task["items"] for s in (item["reference"], item["source"]))
        else:
            strings.extend(m["content"] for item in task["items"] for m in item["messages"][1:])
    return strings


def test_no_evaluation_text_appears_in_training_data(small_build):
    out, _ = small_build
    training = _training_strings(out)
    exact, blob = set(training), "\n\x00".join(training)
    evaluation = _evaluation_strings(out)
    assert len(evaluation) > 1000
    # Single words (a held-out synset's lemma "scanner") are words of the language, shared by design.
    evaluation = [s for s in evaluation if " " in s.strip()]
    leaked = [s for s in evaluation if s in exact or (len(s) >= 40 and s in blob)]
    assert leaked == []


def test_held_out_items_are_whole_source_items(small_build, small_sources):
    out, manifest = small_build
    search = json.loads((out / "eval" / "debian-search.json").read_text())
    train_short = {r["query"][1] for r in read_jsonl(out / "contrastive" / "debian_short_long.jsonl")}
    debian = load_source("debian", small_sources)
    held_sources = {r["source"] for r in debian if r["package"] in search["queries"]}
    train_sources = {r["source"] for r in debian if r["short"] in train_short}
    assert held_sources and train_sources and not held_sources & train_sources
    counts = manifest["items"]["debian"]
    assert counts["held_out_items"] == len(search["queries"])
    assert counts["train_items"] + counts["held_out_items"] <= SUBSET["debian"]


def test_rebuild_is_identical_and_verified(small_build, small_sources, tmp_path):
    out, manifest = small_build
    again = build(tmp_path / "again", data_dir=small_sources, log=lambda *_: None)
    assert again["files"] == manifest["files"]
    messages = []
    build(tmp_path / "again", data_dir=small_sources, log=messages.append)
    assert any("rebuild verified" in m for m in messages)


def test_rebuild_that_differs_is_refused_and_leaves_the_old_build(small_sources, tmp_path):
    out = tmp_path / "data"
    build(out, data_dir=small_sources, log=lambda *_: None)
    manifest = json.loads((out / "MANIFEST.json").read_text())
    manifest["files"]["eval/faq-qa.json"] = "0" * 64
    (out / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="differs from .*eval/faq-qa.json"):
        build(out, data_dir=small_sources, log=lambda *_: None)
    assert json.loads((out / "MANIFEST.json").read_text())["files"]["eval/faq-qa.json"] == "0" * 64


def test_tokenizer_is_byte_level_bpe_with_single_token_markers(small_build):
    from transformers import AutoTokenizer

    out, _ = small_build
    tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer")
    assert len(tokenizer) <= 8192
    for marker in ("<|user|>", "<|assistant|>", "<|embed|>"):
        assert len(tokenizer(marker, add_special_tokens=False)["input_ids"]) == 1
    text = "naïve café — ünïcode"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_contrastive_and_generative_formats(small_build):
    out, _ = small_build
    pair = read_jsonl(out / "contrastive" / "debian_short_long.jsonl")[0]
    assert isinstance(pair["query"], list) and len(pair["query"]) == 2 and pair["pos"] != pair["neg"]
    chat = read_jsonl(out / "generative" / "debian.jsonl")[0]
    assert [m["role"] for m in chat["messages"]] == ["user", "assistant"]


def test_corrupted_files_give_one_clear_error(small_sources, tmp_path):
    bad = tmp_path / "sources"
    shutil.copytree(small_sources, bad)
    path = bad / "faq.jsonl.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match="faq.jsonl.gz: corrupted data file"):
        load_source("faq", bad)
    truncated = tmp_path / "x.jsonl.gz"
    truncated.write_bytes(gzip.compress(b'{"a": 1}\n{"a": ')[:-4])
    with pytest.raises(ValueError, match="x.jsonl.gz: corrupted"):
        read_jsonl(truncated)
    broken = tmp_path / "y.jsonl"
    broken.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(ValueError, match="y.jsonl:2: corrupted"):
        read_jsonl(broken)


def test_writer_is_byte_deterministic(tmp_path):
    records = [{"b": 1, "a": "ü"}, {"a": "x"}]
    assert write_jsonl(tmp_path / "a.jsonl.gz", records) == write_jsonl(tmp_path / "b.jsonl.gz", records)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()


def test_stable_fraction_is_uniform_enough():
    values = [stable_fraction(str(i)) for i in range(4000)]
    assert all(0 <= v < 1 for v in values)
    assert math.isclose(sum(v < 0.2 for v in values) / 4000, 0.2, abs_tol=0.03)


def test_debian_markup_and_one_package_per_source():
    assert long_description([" First line", " continues.", " .", " Second paragraph."]) == "First line continues.\nSecond paragraph."
    long = " A tool that does a great many useful things for people who need\n it every day of the week."
    translations = "\n\n".join(f"Package: {p}\nDescription-md5: {m}\nDescription-en: {s}\n{long}" for p, m, s in
                               [("foo", "m1", "foo tool"), ("foo-doc", "m2", "foo tool docs"), ("bar", "m3", "bar transitional package")])
    packages = "\n\n".join(f"Package: {p}\nSource: {src}\nSection: {sec}\nDescription-md5: {m}" for p, src, sec, m in
                           [("foo-doc", "foo", "doc", "m2"), ("foo", "foo", "utils", "m1"), ("bar", "bar", "oldlibs", "m3")])
    records = records_from_lists(packages, translations)
    # foo and foo-doc share a source: only foo (named like the source) may be kept; bar is transitional.
    assert [r["package"] for r in records] in ([], ["foo"])
    assert all(r["section"] == "utils" for r in records)


def test_wordnet_line_parsing():
    line = ("00197576 00 a 01 back 0 001 ! 00198147 a 0101 | related to or located at the back; "
            '"the back yard"; "the back entrance"  ')
    record = parse_line(line)
    assert record == {"id": "a00197576", "pos": "a", "lexname": "adj.all", "lemmas": ["back"],
                      "gloss": "related to or located at the back", "examples": ["the back yard", "the back entrance"]}
    assert parse_line("  1 This software and database is being provided") is None


def test_manifest_counts_how_the_chats_fit_the_quickstart_length(small_build):
    from gritkit.model.formats import FIT_STATUSES

    _, manifest = small_build
    report = manifest["truncation"]
    assert report["generative_max_length"] == 96
    assert set(report["files"]) == {f"{name}.jsonl" for name in manifest["generative"]}
    for name, examples in manifest["generative"].items():
        counts = report["files"][f"{name}.jsonl"]
        assert counts["examples"] == examples == sum(counts[s] for s in FIT_STATUSES)
    # the Debian "summarise this description" chats have long prompts and short answers: shortened, kept
    assert report["files"]["debian.jsonl"]["shortened"] > 0
