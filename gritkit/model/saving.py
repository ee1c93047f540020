"""A GRIT model directory on disk: what is written, and how, without needing a GritLM.

    DIR/  config.json, model.safetensors    (transformers)
          tokenizer files, chat template    (transformers)
          gritkit_config.json               (GritConfig)
          modules.json, ...                 (sentence-transformers, see st_export)
          projection.safetensors            (when config.projection is set)
          adapter/                          (a LoRA adapter, when a trainer adds one)

``GritLM.save_pretrained`` and the building of a shipped adapter model (``gritkit.weights``)
both write through ``save_model_dir``, so the two can never disagree on the layout. It replaces
an existing directory only when it is a model directory (``is_model_dir``), or when told to.

``check_model_files`` is what a load checks first: a truncated weights file or a missing
tokenizer is one line that names the file, not a traceback from deep inside a loader.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..files import OutputKind, check_output_dir, replace_dir
from .config import CONFIG_NAME, GritConfig
from .formats import GRIT_CHAT_TEMPLATE
from .st_export import write_sentence_transformers_files

ADAPTER_DIR = "adapter"  # a LoRA adapter saved beside the merged weights, in peft's format
PROJECTION_NAME = "projection.safetensors"
DEFAULT_MAX_SEQ_LENGTH = 512  # tokens an embedding input is cut to unless told otherwise
# Weights files that, beside a config.json, make a directory a Hugging Face model (plain or sharded).
WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def prepare_tokenizer(tokenizer) -> None:
    """Give ``tokenizer`` what both jobs need: a chat template (GRIT's when it has none) and a pad id."""
    if tokenizer.chat_template is None:
        tokenizer.chat_template = GRIT_CHAT_TEMPLATE
    if tokenizer.pad_token_id is None:
        # Padding is always masked out; any id will do, and EOS is the usual choice.
        tokenizer.pad_token = tokenizer.eos_token


def is_model_dir(path: Path) -> bool:
    """Whether ``path`` holds a model: this module's ``gritkit_config.json``, or a Hugging Face
    ``config.json`` with weights (a config.json alone is too common a name to tell)."""
    if (path / CONFIG_NAME).is_file():
        return True
    return (path / "config.json").is_file() and any((path / name).is_file() for name in WEIGHTS_FILES)


MODEL_OUTPUT = OutputKind("model directory", is_model_dir)


def check_model_target(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """``path`` once a model may be saved there: absent, empty or a model directory, unless
    ``overwrite``; else FileExistsError (``gritkit.files.check_output_dir``). A command calls it
    before building anything."""
    return check_output_dir(path, overwrite, MODEL_OUTPUT)


def save_model_dir(path: str | os.PathLike, model, tokenizer, config: GritConfig, max_seq_length: int,
                   projection_head=None, state_dict: dict | None = None, also=None,
                   overwrite: bool = False) -> Path:
    """Write a model directory (see the module docstring) at ``path``, whole or not at all.

    Written into a temporary sibling directory and renamed into place, so an interrupted save
    never leaves a half-written model where a complete one was. A directory at ``path`` that is
    not a model (a user's other files) is replaced only with ``overwrite``, else FileExistsError
    before anything is written. ``state_dict`` replaces the model's own weights (a trainer
    passes weights gathered from shards or LoRA-merged). ``also(directory)`` writes more into
    ``path/adapter`` before the rename (a LoRA adapter).
    """
    from safetensors.torch import save_file

    path = check_model_target(path, overwrite)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        config.save(tmp)
        write_sentence_transformers_files(tmp, config, model.config.get_text_config().hidden_size,
                                          max_seq_length, projection_head)
        if projection_head is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in projection_head.state_dict().items()},
                      str(tmp / PROJECTION_NAME))
        if also is not None:
            also(tmp / ADAPTER_DIR)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, path)
    return path


def check_model_files(path: Path) -> None:
    """ValueError naming the file when the model directory ``path`` has no tokenizer or a
    truncated safetensors file: checked before loading, whose own errors name neither."""
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(f"{path} has no tokenizer ({' / '.join(TOKENIZER_FILES)} missing)")
    for weights in sorted(path.glob("*.safetensors")):
        problem = safetensors_problem(weights)
        if problem:
            raise ValueError(f"{weights} is truncated or not a safetensors file ({problem}); "
                             "re-save or re-download the model")


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with the safetensors file ``path``, or None: its 8-byte header length, JSON
    header and tensor data must account for the file's size exactly, as the loader requires."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if size < 8:
            return f"{size} bytes, less than its 8-byte header length"
        if 8 + length > size:
            return f"a {length}-byte header in a file of {size} bytes"
        try:
            header = json.loads(handle.read(length))
            end = max((int(entry["data_offsets"][1]) for name, entry in header.items() if name != "__metadata__"),
                      default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "its header is not a safetensors header"
    expected = 8 + length + end
    if expected != size:
        return f"{size} bytes where its header describes {expected}"
    return None
