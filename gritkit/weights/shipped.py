"""Models shipped inside the package, loadable by name with no download.

    GritLM.from_pretrained("gritkit-tiny")       # the default model of the CLI

``gritkit-tiny`` is trained from scratch by ``configs/gritkit-tiny.yaml`` on the project's offline
data and copied here in float16 by ``python -m gritkit.recipes.package_model``; its model card is
``gritkit/weights/gritkit-tiny/README.md``.

A named pretrained base (``gritkit.weights.bases.BASES``, e.g. ``"smollm2-135m-instruct"``) resolves to
its import in the user cache, made from its installed package on first use.
"""

from __future__ import annotations

import os
from pathlib import Path

SHIPPED_DIR = Path(__file__).parent
DEFAULT_MODEL = "gritkit-tiny"
SHIPPED = ("gritkit-tiny", "gritkit-smol")
# The command line's default where it is installed: better than gritkit-tiny on all four retrieval
# tasks and on summaries (docs/reports/gritkit-smol.md), but it needs its base package and the `bases` extra.
PRETRAINED_DEFAULT = "gritkit-smol"


def default_model(log=None) -> str:
    """The default ``--model`` of embed, generate, serve and rag index: gritkit-smol when it can be
    built here, else gritkit-tiny, saying why through ``log`` (the choice is never silent)."""
    import importlib.util
    import json

    from .bases import BaseNotInstalled, find_base_gguf

    shipped = SHIPPED_DIR / PRETRAINED_DEFAULT
    missing = None
    if not (shipped / "gritkit_base.json").is_file():
        missing = f"{shipped} is missing"
    else:
        try:
            find_base_gguf(json.loads((shipped / "gritkit_base.json").read_text())["base"])
        except BaseNotInstalled as error:
            missing = str(error)
        else:
            absent = [m for m in ("peft", "gguf", "accelerate") if importlib.util.find_spec(m) is None]
            if absent:
                missing = f"{', '.join(absent)} not installed (pip install 'gritkit[bases]')"
    if missing is None:
        return PRETRAINED_DEFAULT
    if log is not None:
        log(f"using {DEFAULT_MODEL}: {PRETRAINED_DEFAULT} is not available ({missing})")
    return DEFAULT_MODEL


def resolve_model_dir(name_or_path: str | os.PathLike) -> Path:
    """The directory of a model: an existing local directory, else a shipped model's name.

    A local directory wins over a shipped name, so a user's ``./gritkit-tiny`` is never shadowed.
    """
    path = Path(name_or_path)
    if path.is_dir():
        return path
    from .adapters import build_adapter_model, is_adapter_model
    from .bases import BASES, base_model_dir

    if str(name_or_path) in SHIPPED:
        shipped = SHIPPED_DIR / str(name_or_path)
        if is_adapter_model(shipped):
            return build_adapter_model(shipped)
        if not (shipped / "config.json").is_file():
            raise FileNotFoundError(f"the shipped model {name_or_path} is missing from {shipped} "
                                    f"(reinstall gritkit, or rebuild it: see configs/{name_or_path}.yaml)")
        return shipped
    if str(name_or_path) in BASES:
        return base_model_dir(str(name_or_path))
    raise FileNotFoundError(f"model directory not found: {path} (shipped models: {', '.join(SHIPPED)}; "
                            f"pretrained bases: {', '.join(BASES)})")
