"""What the benchmarks share (not a benchmark itself): the data their real runs read, built when a
fresh clone lacks it, and the tiny set-ups of their smoke runs.

Every benchmark takes ``--smoke``: tiny sizes and one repeat, so that its code path runs in
seconds (its figures mean nothing then); ``--json`` ends its output with one JSON line.
tests/benchmarks runs every smoke run.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Smoke runs: a random Llama of this size on a tokenizer of stdlib docstrings with this vocabulary,
SMOKE_MODEL = dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2)
SMOKE_VOCAB = 1000
# and a `gritkit data build` of this many items of each shipped source (every file and held-out task
# of the full build, a few seconds to build).
SMOKE_SOURCES = {"debian": 120, "wordnet": 300, "faq": 120, "stdlib": 80}


def note(message: str) -> None:
    """A remark about the run (a skipped peer, data being built), on stderr: stdout holds the figures."""
    print(message, file=sys.stderr, flush=True)


def parse_args(parser: argparse.ArgumentParser, argv, smoke: dict) -> argparse.Namespace:
    """Parse ``argv`` (None: the command line); with ``--smoke``, ``smoke`` replaces the defaults
    (flags given explicitly still win)."""
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes and one repeat: the same code path in seconds, figures meaningless")
    args = parser.parse_args(argv)
    if args.smoke:
        parser.set_defaults(**smoke)
        args = parser.parse_args(argv)
    return args


def scratch_dir(prefix: str) -> Path:
    """A temporary directory removed when this process exits."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def data_build(path: str | Path) -> Path:
    """``path`` holding a `gritkit data build`, built there first (from the shipped sources, under a
    minute) when it holds none."""
    from gritkit.datasets.build import MANIFEST, build

    path = Path(path)
    if not (path / MANIFEST).is_file():
        note(f"{path} holds no data build: building it (`gritkit data build --out {path}`)")
        build(path, log=note)
    return path


@functools.cache
def smoke_data() -> Path:
    """A data build of ``SMOKE_SOURCES`` items of each shipped source, in a temporary directory;
    built once per process."""
    from gritkit.datasets.build import build
    from gritkit.datasets.common import stable_fraction
    from gritkit.datasets.sources import load_source, ship

    root = scratch_dir("benchmark-smoke-data-")
    ship({name: sorted(load_source(name), key=lambda r: stable_fraction(json.dumps(r, sort_keys=True)))[:count]
          for name, count in SMOKE_SOURCES.items()}, root / "sources")
    build(root / "data", data_dir=root / "sources", log=lambda *_: None)
    return root / "data"


def data_dir(args) -> Path:
    """The data build a run reads: ``args.data`` (built there when missing), or the smoke build
    where ``args.data`` is None (a smoke run's default)."""
    return smoke_data() if args.data is None else data_build(args.data)
