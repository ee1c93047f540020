"""A GRIT model directory on disk: what is written, and how, without needing a GritLM.

    DIR/  config.json, model.safetensors    (transformers)
          tokenizer files, chat template    (transformers)
          gritkit_config.json               (GritConfig)
          modules.json, ...                 (sentence-transformers, see st_export)
          projection.safetensors            (when config.projection is set)
          adapter/                          (a LoRA adapter, when a trainer adds one)

``GritLM.save_pretrained`` and the building of a shipped adapter model (``gritkit.weights``)
both write through ``save_model_dir``, so the two can never disagree on the layout.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..files import replace_dir
from .config import GritConfig
from .formats import GRIT_CHAT_TEMPLATE
from .st_export import write_sentence_transformers_files

ADAPTER_DIR = "adapter"  # a LoRA adapter saved beside the merged weights, in peft's format
PROJECTION_NAME = "projection.safetensors"
DEFAULT_MAX_SEQ_LENGTH = 512  # tokens an embedding input is cut to unless told otherwise


def prepare_tokenizer(tokenizer) -> None:
    """Give ``tokenizer`` what both jobs need: a chat template (GRIT's when it has none) and a pad id."""
    if tokenizer.chat_template is None:
        tokenizer.chat_template = GRIT_CHAT_TEMPLATE
    if tokenizer.pad_token_id is None:
        # Padding is always masked out; any id will do, and EOS is the usual choice.
        tokenizer.pad_token = tokenizer.eos_token


def save_model_dir(path: str | os.PathLike, model, tokenizer, config: GritConfig, max_seq_length: int,
                   projection_head=None, state_dict: dict | None = None, also=None) -> Path:
    """Write a model directory (see the module docstring) at ``path``, whole or not at all.

    Written into a temporary sibling directory and renamed into place, so an interrupted save
    never leaves a half-written model where a complete one was. ``state_dict`` replaces the
    model's own weights (a trainer passes weights gathered from shards or LoRA-merged).
    ``also(directory)`` writes more into ``path/adapter`` before the rename (a LoRA adapter).
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
