"""Models shipped as LoRA adapters: rebuilt on their named base (``gritkit.weights.bases``) on first use.

A shipped adapter model's directory holds ``gritkit_base.json`` (the named base and the sha256 of
its GGUF file), ``adapter/`` (peft LoRA weights), ``gritkit_config.json`` and the model card:
a few MB where the merged weights would be hundreds. ``build_adapter_model`` merges it into its
base once and keeps the result in the user cache as a plain model directory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..model.config import GritConfig
from ..model.saving import ADAPTER_DIR, DEFAULT_MAX_SEQ_LENGTH, prepare_tokenizer, save_model_dir
from .bases import BASES, IMPORT_RECORD, base_model_dir, cache_dir, sha256_of

BASE_RECORD = "gritkit_base.json"  # in a shipped adapter model: which named base it is built on


def is_adapter_model(directory: Path) -> bool:
    return (Path(directory) / BASE_RECORD).is_file()


def build_adapter_model(shipped: Path, log=print) -> Path:
    """The full model directory of a shipped adapter model, built on its base into the cache.

    The base is imported from its installed package, the adapter merged into it, and the result
    saved once under the cache, keyed by the adapter's hash, so later loads are a plain directory read.
    """
    shipped = Path(shipped)
    record = json.loads((shipped / BASE_RECORD).read_text())
    adapter = shipped / ADAPTER_DIR
    key = sha256_of(adapter / "adapter_model.safetensors")[:16]
    out = cache_dir() / "models" / f"{shipped.name}-{key}"
    if (out / "config.json").is_file():
        return out
    base_dir = base_model_dir(record["base"], log=log)
    base_sha = json.loads((base_dir / IMPORT_RECORD).read_text())["sha256"]
    if base_sha != record["base_sha256"]:
        raise ValueError(f"{shipped.name} was trained on {record['base']} with GGUF sha256 {record['base_sha256'][:12]}..., "
                         f"but the installed file has {base_sha[:12]}...: {BASES[record['base']].install_command}")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"building {shipped.name}: {record['base']} + its LoRA adapter, cached in {out}")
    config = GritConfig.load(shipped)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    prepare_tokenizer(tokenizer)
    if config.special_markers:
        # A compact-format run added its markers to the base before LoRA froze every embedding
        # row, so adding them again the same way restores the rows it trained with exactly.
        from ..model.compact_format import add_markers

        added = add_markers(model, tokenizer, config.replace(special_markers=()))
        if added != config.special_markers:
            raise ValueError(f"{shipped.name} was trained with the special tokens {list(config.special_markers)}, "
                             f"but adding its format's markers to {record['base']} gives {list(added)}")
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    save_model_dir(out, merged, tokenizer, config, DEFAULT_MAX_SEQ_LENGTH)
    shutil.copy(shipped / BASE_RECORD, out / BASE_RECORD)
    if (shipped / "README.md").is_file():
        shutil.copy(shipped / "README.md", out / "README.md")
    return out
