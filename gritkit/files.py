"""Writing a directory whole: built beside its target, then renamed into place.

A reader (or a crash) never sees a half-written model, index or checkpoint: the target holds
either the previous complete directory or the new one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def replace_dir(new: Path, target: Path) -> None:
    """Move directory ``new`` to ``target``, replacing an existing one with two renames."""
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)
