"""Deterministic JSONL.gz files, checksums, stable hashing and fetching pinned Debian packages.

Every file the data builder writes goes through ``write_jsonl_gz`` (gzip with a zero timestamp,
sorted keys, one record per line) so the same records give the same bytes, hence the same
sha256, on every machine. Readers raise ``ValueError`` naming the file and line of a bad record.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import zlib
from pathlib import Path
from typing import Iterable

DATA_DIR = Path(__file__).resolve().parent.parent.parent / "data"


class SourceUnavailable(Exception):
    """A source cannot be extracted here (no apt, not root, registry unreachable...)."""


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by ``key`` alone (no seed, no process hash randomisation)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; data files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def dumps_jsonl(records: Iterable[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records).encode("utf-8")


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> str:
    """Write records as JSONL (gzip-compressed, timestamp 0, when the name ends in .gz); returns sha256."""
    path = Path(path)
    data = dumps_jsonl(records)
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=9, mtime=0)
    _atomic_write(path, data)
    return hashlib.sha256(data).hexdigest()


def write_json(path: str | os.PathLike, obj) -> str:
    """Write one JSON document (sorted keys) atomically; returns its sha256."""
    data = (json.dumps(obj, ensure_ascii=False, sort_keys=True, indent=1) + "\n").encode("utf-8")
    _atomic_write(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def read_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> list[dict]:
    """Records of a JSONL or JSONL.gz file; ``ValueError`` naming file and line for bad content."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    required = tuple(required)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: corrupted data file ({exc}); rebuild it with `gritkit data build`") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: corrupted data file (invalid JSON: {exc.msg})") from None
        if not isinstance(record, dict) or any(key not in record for key in required):
            raise ValueError(f"{path}:{number}: corrupted data file (expected an object with keys {', '.join(required)})")
        records.append(record)
    return records


def read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: corrupted data file ({exc})") from None


def apt_fetch(packages: list[str], workdir: Path) -> Path:
    """Download pinned Debian packages (``name=version``) and unpack them; returns the root dir.

    Uses a private apt lists directory so the system's lists are left alone. Needs apt-get,
    dpkg-deb and permission to run them (normally root); otherwise ``SourceUnavailable``.
    """
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise SourceUnavailable("apt-get/dpkg-deb not found (not a Debian system)")
    lists = apt_lists(workdir)
    cache = workdir / "apt-cache"
    (cache / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    options = ["-o", f"Dir::State::Lists={lists}", "-o", f"Dir::Cache={cache}"]
    debs = workdir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["apt-get", *options, "download", *packages], cwd=debs, capture_output=True, text=True)
    if done.returncode != 0:
        raise SourceUnavailable(f"apt-get download {' '.join(packages)} failed: {done.stderr.strip().splitlines()[-1:]}")
    root = workdir / "unpacked"
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def apt_lists(workdir: Path) -> Path:
    """A private, freshly updated apt lists directory (English descriptions) under ``workdir``."""
    lists = workdir / "apt-lists"
    if (lists / "partial").is_dir() and any(lists.glob("*_Packages*")):
        return lists
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    if not shutil.which("apt-get"):
        raise SourceUnavailable("apt-get not found (not a Debian system)")
    done = subprocess.run(["apt-get", "update", "-o", f"Dir::State::Lists={lists}", "-o", "Acquire::Languages=en"],
                          capture_output=True, text=True)
    if done.returncode != 0 or not any(lists.glob("*_Packages*")):
        reason = (done.stderr.strip().splitlines() or ["no package lists"])[-1]
        raise SourceUnavailable(f"apt-get update failed ({reason}); root and access to the Debian mirror are needed")
    return lists


def apt_cat(path: Path) -> str:
    """Text of a (possibly lz4/xz/gz-compressed) apt lists file, decompressed by apt itself."""
    done = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", str(path)], capture_output=True)
    if done.returncode != 0:
        raise SourceUnavailable(f"cannot read {path}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode("utf-8", errors="replace")
