"""Training configuration: one typed dataclass, loaded from YAML, overridden with ``key=value``.

    config = load_config("configs/tiny.yaml", ["max_steps=20", "output_dir=runs/x"])

Every key is commented in ``configs/*.yaml``. Defaults are the paper's GritLM-7B recipe where it
has one (learning rate, batch sizes, temperature, lengths, group size). Unknown keys, values of the
wrong type and values out of their range are rejected with the key's name and the value, before
anything is loaded or written. Numbers in exponent notation without a dot (``2e-5``), which YAML
1.1 leaves as strings, are read as the numbers they are.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

from ..model.config import ATTENTIONS
from ..model.pooling import POOLING_METHODS

MODES = ("unified", "embedding", "generative")
AGGREGATIONS = ("token", "sample", "mixed")
PARALLEL = ("ddp", "fsdp")
# weights that must not be negative (a negative loss weight trains by gradient ascent) and other
# keys where a negative value has no meaning
NON_NEGATIVE_FLOATS = ("lambda_rep", "lambda_gen", "lambda_doc_cache", "learning_rate", "weight_decay", "max_grad_norm",
                       "max_minutes")
UNIT_INTERVAL = ("warmup_ratio", "adam_beta1", "adam_beta2", "lora_dropout")  # each in [0, 1)


@dataclass
class TrainConfig:
    # --- model: a local Hugging Face directory, or a tiny model built from an architecture;
    # pooling, attention and query_instruction are the GritConfig fields of the same names, saved with the model
    model: str = ""
    architecture: str = "llama"
    tokenizer: str = ""
    tokenizer_corpus: list[str] = field(default_factory=list)
    vocab_size: int = 8192
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    pooling: str = "mean"
    attention: str = "bidirectional"
    query_instruction: str = ""
    compact_format: bool = False
    zero_init_residual: bool = False
    tie_embeddings: bool = True
    # --- data
    embedding_data: list[str] = field(default_factory=list)
    generative_data: list[str] = field(default_factory=list)
    doc_cache_data: list[str] = field(default_factory=list)
    mode: str = "unified"
    # --- objective
    temperature: float = 0.02
    matryoshka_dims: list[int] = field(default_factory=list)
    train_group_size: int = 2
    lambda_rep: float = 1.0
    lambda_gen: float = 1.0
    lambda_doc_cache: float = 1.0
    embedding_every: int = 1
    loss_gen_aggregation: str = "mixed"
    # --- batching (global sizes per optimiser step, over all processes)
    embedding_batch_size: int = 2048
    embedding_chunk_size: int = 0
    generative_batch_size: int = 256
    generative_micro_batch_size: int = 8
    doc_cache_batch_size: int = 8
    doc_cache_max_length: int = 512
    query_max_length: int = 256
    passage_max_length: int = 2048
    generative_max_length: int = 2048
    packing: bool = False
    pack_length: int = 0
    single_pass: bool = False
    # --- optimisation
    max_steps: int = 0
    max_minutes: float = 0.0
    learning_rate: float = 2e-5
    lm_head_lr_scale: float = 1.0
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    max_grad_norm: float = 1.0
    bf16: str = "auto"
    gradient_checkpointing: bool = False
    # --- LoRA (lora_r 0: full fine-tuning)
    lora_r: int = 0
    lora_init: str = ""
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    # --- several processes
    parallel: str = "ddp"
    # --- output
    output_dir: str = "runs/train"
    save_every: int = 0
    resume: bool = False
    seed: int = 0
    threads: int = 0
    progress_bar: bool = True
    tensorboard: bool = True

    def check(self) -> "TrainConfig":
        """Raise ValueError naming the first inconsistent key."""
        self._check_numbers()
        _choice("mode", self.mode, MODES)
        _choice("loss_gen_aggregation", self.loss_gen_aggregation, AGGREGATIONS)
        _choice("parallel", self.parallel, PARALLEL)
        _choice("bf16", self.bf16, ("auto", "true", "false"))
        _choice("attention", self.attention, ATTENTIONS)
        _choice("pooling", self.pooling, POOLING_METHODS)
        if not self.model and not self.architecture:
            raise ValueError("config: set model (a local model directory) or architecture (to build a tiny model)")
        if self.mode != "generative" and not self.embedding_data:
            raise ValueError(f"config: mode={self.mode} needs embedding_data (a list of JSONL files)")
        if self.mode != "embedding" and not self.generative_data:
            raise ValueError(f"config: mode={self.mode} needs generative_data (a list of JSONL files)")
        for key in ("train_group_size", "embedding_every", "embedding_batch_size", "generative_batch_size",
                    "generative_micro_batch_size", "doc_cache_batch_size", "doc_cache_max_length",
                    "query_max_length", "passage_max_length", "generative_max_length"):
            if getattr(self, key) < 1:
                raise ValueError(f"config: {key} must be >= 1, got {getattr(self, key)}")
        for key in ("max_steps", "embedding_chunk_size", "save_every", "lora_r", "threads", "pack_length"):
            if getattr(self, key) < 0:
                raise ValueError(f"config: {key} must be >= 0, got {getattr(self, key)}")
        if self.doc_cache_data and self.mode != "unified":
            raise ValueError(f"config: doc_cache_data trains reading a document's doc cache beside both GRIT losses; "
                             f"it needs mode=unified, got {self.mode}")
        if self.lora_init and not self.lora_r:
            raise ValueError("config: lora_init starts LoRA from a saved adapter; set lora_r > 0 (its rank is the adapter's)")
        if self.embedding_every > 1 and self.mode != "unified":
            raise ValueError(f"config: embedding_every={self.embedding_every} needs mode=unified (the steps between "
                             f"train the next-token loss alone)")
        if self.single_pass and not (self.packing and self.mode == "unified"):
            raise ValueError("config: single_pass puts both objectives' samples in shared packed rows; "
                             "it needs packing: true and mode: unified")
        longest = max(self.query_max_length, self.passage_max_length, self.generative_max_length)
        if self.packing and 0 < self.pack_length < longest:
            raise ValueError(f"config: pack_length {self.pack_length} is shorter than the longest sample the "
                             f"length limits allow ({longest} tokens); raise it, or set 0 for that length")
        if any(d < 1 for d in self.matryoshka_dims) or len(set(self.matryoshka_dims)) < len(self.matryoshka_dims):
            raise ValueError(f"config: matryoshka_dims must be distinct positive sizes, got {self.matryoshka_dims}")
        self._check_objectives()
        return self

    def _check_numbers(self) -> None:
        """Every float finite, and each number in the range where it means something: an infinite or
        negative learning rate, weight or clipping norm trains without a word of warning, but not
        as intended."""
        for key in _keys_of_type(float):
            if not math.isfinite(getattr(self, key)):
                raise ValueError(f"config: {key} must be finite, got {getattr(self, key)}")
        for key in NON_NEGATIVE_FLOATS:
            if getattr(self, key) < 0:
                ascent = " (a negative weight trains by gradient ascent)" if key.startswith("lambda_") else ""
                raise ValueError(f"config: {key} must be >= 0, got {getattr(self, key)}{ascent}")
        for key in UNIT_INTERVAL:
            if not 0 <= getattr(self, key) < 1:
                raise ValueError(f"config: {key} must be in [0, 1), got {getattr(self, key)}")
        for key in ("lm_head_lr_scale", "temperature"):
            if getattr(self, key) <= 0:
                raise ValueError(f"config: {key} must be > 0, got {getattr(self, key)}")
        if self.lora_r and self.lora_alpha <= 0:
            raise ValueError(f"config: lora_alpha must be > 0 with lora_r={self.lora_r}, got {self.lora_alpha} "
                             "(it scales the adapter's update: alpha / r)")

    def _check_objectives(self) -> None:
        """At least one loss of the mode has a weight above 0: a run with none trains nothing."""
        weights = {"embedding": ["lambda_rep"], "generative": ["lambda_gen"],
                   "unified": ["lambda_rep", "lambda_gen"] + (["lambda_doc_cache"] if self.doc_cache_data else [])}
        keys = weights[self.mode]
        if not any(getattr(self, key) > 0 for key in keys):
            raise ValueError(f"config: mode={self.mode} trains nothing: "
                             f"{', '.join(f'{key}={getattr(self, key)}' for key in keys)}; set one of them > 0")

    def packed_row_length(self, side: str) -> int:
        """Tokens per packed row for ``side`` (embedding, generative or both); 0 when not packing.

        ``pack_length`` 0 means the longest sample the side's length limits allow, so every
        sample fits a row and no row is longer than the padded batches it replaces.
        """
        if not self.packing:
            return 0
        limits = {"embedding": (self.query_max_length, self.passage_max_length),
                  "generative": (self.generative_max_length,)}
        sides = ("embedding", "generative") if side == "both" else (side,)
        return self.pack_length or max(n for s in sides for n in limits[s])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"config: {key} must be one of {', '.join(choices)}, got {value!r}")


# a number as YAML 1.1 leaves it a string: an exponent without a dot or a sign (2e-5, 1E-4, 5e3)
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _keys_of_type(kind) -> list[str]:
    return [key for key, hint in typing.get_type_hints(TrainConfig).items() if hint is kind]


def _as_number(value):
    """``value`` as a float when it is a string that spells a number (``2e-5``); else unchanged.

    PyYAML follows YAML 1.1, which reads ``2e-5`` as a string (it wants ``2.0e-5``); a user who
    writes the learning rate as papers do means the number.
    """
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)
    return value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _convert(key: str, value, where: str):
    """Check ``value`` against the declared type of ``key`` (ints are accepted for floats, whole
    numbers for ints, and numbers YAML left as strings for both)."""
    kind = typing.get_type_hints(TrainConfig)[key]
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        number = _as_number(value)
        if isinstance(number, int) and not isinstance(number, bool):
            return number
        if isinstance(number, float):
            if math.isfinite(number) and number.is_integer():
                return int(number)
            raise ValueError(f"{where}: {key} must be int, got {value!r} (not a whole number)")
    elif kind is float:
        number = _as_number(value)
        if _is_number(number):
            return float(number)
    elif kind is str:
        if isinstance(value, bool):  # YAML reads true/false as booleans; bf16 takes them as words
            return "true" if value else "false"
        if isinstance(value, (str, int, float)):
            return str(value)
    elif typing.get_origin(kind) is list:
        if isinstance(value, str):
            value = [value]
        item = typing.get_args(kind)[0]
        if item is int and isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if isinstance(value, list) and all(isinstance(v, item) and not isinstance(v, bool) for v in value):
            return value
    raise ValueError(f"{where}: {key} must be {getattr(kind, '__name__', str(kind))}, got {value!r}")


def config_from_dict(values: dict, where: str = "config") -> TrainConfig:
    """A checked TrainConfig from a mapping; unknown keys are an error."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for key in values:
        if key not in known:
            raise ValueError(f"{where}: unknown key {key!r}")
    return TrainConfig(**{k: _convert(k, v, where) for k, v in values.items()}).check()


def parse_overrides(overrides: list[str]) -> dict:
    """``["max_steps=5", "embedding_data=[a.jsonl, b.jsonl]"]`` -> dict (values parsed as YAML)."""
    import yaml

    values = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not key=value")
        values[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
    return values


def read_config_file(path: str | Path) -> dict:
    """The key: value mapping of a YAML config file, unchecked (``config_from_dict`` checks it)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a config is a mapping of key: value")
    return values


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML config, apply ``key=value`` overrides, check it.

    Relative data and model paths in the file are resolved against the working directory, as
    a user typing the command expects.
    """
    values = read_config_file(path) if path is not None else {}
    config = config_from_dict(values, str(path) if path else "config")
    merged = {**config.to_dict(), **parse_overrides(list(overrides))}
    return config_from_dict(merged, "override")
