"""Writing a directory whole: built beside its target, then renamed into place.

A reader (or a crash) never sees a half-written model, index or checkpoint: the target holds
either the previous complete directory or the new one.

Replacing a directory deletes what it held, so a writer of a directory the user names (a model,
an index) first asks ``check_output_dir`` whether the target may go: only when it is absent,
empty, an earlier output of the same writer, or the user said ``overwrite``. A directory the
user filled with other files is never deleted unasked.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# Entries of a refused directory named in its error; more are counted, not listed.
LISTED_ENTRIES = 5


@dataclass(frozen=True)
class OutputKind:
    """What a writer makes (``name``, e.g. "model directory") and how ``recognise(directory)``
    tells an earlier one: by a file the writer itself writes, never a name any project might use."""

    name: str
    recognise: Callable[[Path], bool]


def check_output_dir(target: str | os.PathLike, overwrite: bool = False, kind: OutputKind | None = None) -> Path:
    """``target`` as a Path once a writer of ``kind`` may replace it.

    Allowed: an absent or empty directory, an earlier output ``kind`` recognises, or any
    directory with ``overwrite``. Anything else is a FileExistsError naming the directory and
    what it holds; a file in the directory's place is refused even with ``overwrite`` (it is not
    what the caller thinks). ``kind`` None recognises nothing: every non-empty directory needs
    ``overwrite``. The parent is created, so that an unwritable place fails now rather than
    after the work. Call it before the work, so that a refusal costs nothing.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a directory")
    if target.is_dir() and not overwrite:
        entries = sorted(target.iterdir())
        if entries and not (kind is not None and kind.recognise(target)):
            what = "is not empty" + (f" and is not a {kind.name}" if kind is not None else "")
            raise FileExistsError(f"{target} {what} (holds {describe_entries(entries)}); choose another "
                                  "directory or pass overwrite=True / --overwrite")
    _check_parent(target.parent)
    return target


def describe_entries(entries: list[Path]) -> str:
    """The first few names of ``entries`` (folders ending in /), and how many more there are."""
    names = [entry.name + ("/" if entry.is_dir() else "") for entry in entries[:LISTED_ENTRIES]]
    if len(entries) > LISTED_ENTRIES:
        names.append(f"{len(entries) - LISTED_ENTRIES} more")
    return ", ".join(names)


def _check_parent(parent: Path) -> None:
    """Create ``parent``; an OSError naming it when it cannot be created or written to."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"cannot create the output's parent directory {parent}: {error}") from None
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"output directory {parent} is not writable")


def replace_dir(new: Path, target: Path) -> None:
    """Move directory ``new`` to ``target``, replacing an existing one with two renames.

    It replaces whatever is at ``target``: a writer of a directory the user names checks it
    first with ``check_output_dir``.
    """
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)
