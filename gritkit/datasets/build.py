"""``gritkit data build``: training files, held-out evaluation tasks and a tokenizer from real text.

    gritkit data build --out runs/data          # from the shipped copies under data/ (seconds)
    gritkit data build --refresh                # re-extract the sources from pinned Debian packages first

Layout of the output directory:
    contrastive/<dataset>.jsonl   {"query": [instruction, text], "pos": [text], "neg": [text]}
    generative/<source>.jsonl     {"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}
    eval/<task>.json              held-out tasks (retrieval, labelled, summary, perplexity)
    tokenizer/                    byte-level BPE (8192) trained on the training text, GRIT markers special
    MANIFEST.json                 sha256 of every file, the sources used and why

The split happens first, per source item (package, synset, FAQ entry, function), by a hash of its
id; training items sharing any text with a held-out item are then dropped too, so no evaluation
text is ever trained on. Everything is sorted and seeded: a rebuild gives the same bytes, and a
rebuild over an existing directory is verified against its manifest.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

from .common import DATA_DIR, read_json, sha256_file, stable_fraction, write_json, write_jsonl
from .sources import SOURCES, extract_sources, load_source
from .tasks import RECIPES

DEFAULT_OUT = Path("runs/data")
MANIFEST = "MANIFEST.json"
SEED = 20240209
EVAL_FRACTION = {"debian": 0.2, "wordnet": 0.1, "faq": 0.4, "stdlib": 0.25}
PERPLEXITY_ITEMS = 600
TOKENIZER_VOCAB = 8192
# The length the build reports chat truncation at: the quickstart's generative_max_length.
CHECK_LENGTH = 96


def split(name: str, records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(train, held_out) items of a source; held-out by item id, then train items sharing a held-out text dropped."""
    recipe = RECIPES[name]
    held = [r for r in records if stable_fraction(f"holdout:{name}:{recipe.item_id(r)}") < EVAL_FRACTION[name]]
    held_ids = {recipe.item_id(r) for r in held}
    held_texts = {t for r in held for t in recipe.held_texts(r)}
    train = [r for r in records if recipe.item_id(r) not in held_ids
             and not any(t in held_texts for t in recipe.held_texts(r))]
    if recipe.cross_references:
        # FAQ answers quote other questions ("see: What is CPAN?"): drop those quoting a held-out one.
        quoted = [t for t in held_texts if len(t) >= 40]
        train = [r for r in train if not any(q in t for t in recipe.held_texts(r) for q in quoted)]
    return train, held


def _source_records(refresh: bool, workdir: Path | None, data_dir: Path, log) -> tuple[dict, dict]:
    """Records per source and a note saying where they came from (or why a source was skipped)."""
    fresh = extract_sources(workdir or Path("runs/sources")) if refresh else {}
    records, notes = {}, {}
    for name in SOURCES:
        extracted, note = fresh.get(name, (None, "shipped copy (pass --refresh to re-extract from the registry)"))
        if extracted is not None:
            records[name], notes[name] = extracted, note
        else:
            try:
                records[name] = load_source(name, data_dir)
                notes[name] = note if note.startswith("shipped") else f"{note}; used the shipped copy"
            except (FileNotFoundError, ValueError) as exc:
                if refresh:
                    notes[name] = f"skipped: {exc}"
                    continue
                raise
        log(f"  {name}: {len(records[name])} records, {notes[name]}")
    return records, notes


def _training_texts(contrastive: dict, generative: dict) -> list[str]:
    texts = []
    for pairs in contrastive.values():
        for p in pairs:
            texts.extend([p["query"][1], *p["pos"]])
    for chats in generative.values():
        texts.extend(m["content"] for c in chats for m in c["messages"])
    return texts


def build(out: str | os.PathLike = DEFAULT_OUT, refresh: bool = False, force: bool = False,
          data_dir: str | os.PathLike = DATA_DIR, workdir: str | os.PathLike | None = None,
          check_length: int = CHECK_LENGTH, log=print) -> dict:
    """Build everything into ``out``; returns the manifest.

    The manifest also records, per generative file, how many chats a trainer would shorten or
    drop at ``check_length`` tokens with the built tokenizer (logged too).

    The build is written to a temporary sibling directory. If ``out`` already holds a build whose
    manifest lists different files or checksums, ``ValueError`` names them and ``out`` is left as it
    was (``force`` replaces it). ``refresh`` re-extracts sources from the registries when it can.
    """
    from ..model.tiny import train_tokenizer

    out = Path(out)
    log(f"sources ({'re-extracted where possible' if refresh else 'shipped copies in ' + str(data_dir)}):")
    records, notes = _source_records(refresh, Path(workdir) if workdir else None, Path(data_dir), log)
    contrastive, generative, evaluation, held_chats = {}, {}, {}, []
    counts = {}
    for name in sorted(records):
        recipe = RECIPES[name]
        train, held = split(name, records[name])
        counts[name] = {"train_items": len(train), "held_out_items": len(held)}
        contrastive.update(recipe.contrastive(train, SEED))
        generative[name] = recipe.generative(train)
        evaluation.update(recipe.evaluation(held))
        held_chats.extend(recipe.generative(held))
    # Perplexity on held-out chats of every source (answers only are scored), a fixed sample.
    random.Random(SEED).shuffle(held_chats)
    evaluation["heldout-perplexity"] = dict(kind="perplexity", items=held_chats[:PERPLEXITY_ITEMS])

    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for dataset, pairs in sorted(contrastive.items()):
            write_jsonl(tmp / "contrastive" / f"{dataset}.jsonl", pairs)
        for name, chats in sorted(generative.items()):
            write_jsonl(tmp / "generative" / f"{name}.jsonl", chats)
        for task, spec in sorted(evaluation.items()):
            write_json(tmp / "eval" / f"{task}.json", dict(spec, name=task))
        tokenizer = train_tokenizer(sorted(_training_texts(contrastive, generative)), vocab_size=TOKENIZER_VOCAB)
        tokenizer.save_pretrained(tmp / "tokenizer")
        truncation = _truncation(tokenizer, tmp / "generative", check_length, log)
        files = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = dict(files=files, sources=notes, items=counts, seed=SEED, eval_fraction=EVAL_FRACTION,
                        contrastive={k: len(v) for k, v in sorted(contrastive.items())},
                        generative={k: len(v) for k, v in sorted(generative.items())},
                        truncation={"generative_max_length": check_length, "files": truncation})
        write_json(tmp / MANIFEST, manifest)
        _verify_or_replace(tmp, out, files, force, log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _truncation(tokenizer, directory: Path, max_length: int, log) -> dict:
    """Fit status counts of every chat file in ``directory`` at ``max_length`` tokens (``data.py``)."""
    from ..training.data import read_generative_file, tokenize_generative_files

    files = [(path.name, read_generative_file(path)) for path in sorted(directory.glob("*.jsonl"))]
    prepared = tokenize_generative_files(tokenizer, files, max_length)
    for line in prepared.describe(max_length):
        log(f"  generative/{line}")
    return prepared.counts


def _verify_or_replace(tmp: Path, out: Path, files: dict, force: bool, log) -> None:
    previous = read_json(out / MANIFEST)["files"] if (out / MANIFEST).is_file() else None
    if previous is not None and previous == files:
        log(f"rebuild verified: all {len(files)} files identical to {out / MANIFEST}")
    elif previous is not None and not force:
        changed = sorted(k for k in set(previous) | set(files) if previous.get(k) != files.get(k))
        raise ValueError(f"rebuild differs from {out / MANIFEST} in {len(changed)} files ({', '.join(changed[:4])}...); "
                         f"sources or code changed: pass --force to replace {out}, or build into another --out")
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    log(f"wrote {len(files)} files and {MANIFEST} to {out}")
