"""GritConfig: every setting that decides how a GRIT model embeds, in one saved object.

    config = GritConfig(pooling="last_token", attention="causal", query_instruction="Find the passage")
    model = GritLM(hf_model, tokenizer, config=config)
    model.save_pretrained("m")          # writes m/gritkit_config.json with every field
    GritLM.from_pretrained("m").config == config

The object is frozen: a model's settings change only by building a new config
(``config.replace(...)`` or ``GritLM.with_config``), so every path that saves or rebuilds a model
copies all of them at once and none can be forgotten.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .formats import GritFormat
from .pooling import POOLING_METHODS

CONFIG_NAME = "gritkit_config.json"
ATTENTIONS = ("bidirectional", "causal")
# The query instruction of a model that saved none: GRIT embeds queries after an instruction, and a
# bare question is a form such a model was not trained on. One rule everywhere (Python, CLI, server,
# RAG): the saved ``query_instruction``, else this (``GritConfig.default_query_instruction``).
FALLBACK_QUERY_INSTRUCTION = "Given a question, retrieve passages that answer it"


@dataclass(frozen=True)
class GritConfig:
    """How a GRIT model turns text into a vector.

    Args:
        pooling: ``mean`` (GRIT), ``weighted_mean``, ``last_token`` or ``cls``, over the text tokens.
        attention: ``bidirectional`` (GRIT) or ``causal`` (the paper's ablation) for embedding passes;
            generation is always causal.
        format: the strings placed around a text before it is embedded.
        projection: output size of a linear head applied to the pooled vector, or None for none.
        query_instruction: what a query is embedded after when given no instruction (empty:
            ``FALLBACK_QUERY_INSTRUCTION``; see ``default_query_instruction``).
        document_instruction: the same for ``encode_document``; GRIT embeds documents without one.
        special_markers: format markers added to the tokenizer as single special tokens
            (``gritkit.model.compact_format``); empty for the byte-exact format.
    """

    pooling: str = "mean"
    attention: str = "bidirectional"
    format: GritFormat = field(default_factory=GritFormat)
    projection: int | None = None
    query_instruction: str = ""
    document_instruction: str = ""
    special_markers: tuple[str, ...] = ()

    def __post_init__(self):
        if self.pooling not in POOLING_METHODS:
            raise ValueError(f"pooling must be one of {', '.join(POOLING_METHODS)}, got {self.pooling!r}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTIONS)}, got {self.attention!r}")
        if not isinstance(self.format, GritFormat):
            raise TypeError(f"format must be a GritFormat, got {type(self.format).__name__}")
        if self.projection is not None and (isinstance(self.projection, bool) or not isinstance(self.projection, int)
                                            or self.projection < 1):
            raise ValueError(f"projection must be a positive output size or None, got {self.projection!r}")
        if not isinstance(self.special_markers, tuple) or not all(isinstance(m, str) and m for m in self.special_markers):
            raise TypeError(f"special_markers must be a tuple of non-empty str, got {self.special_markers!r}")
        for name in ("query_instruction", "document_instruction"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a str, got {type(getattr(self, name)).__name__}")

    @property
    def default_query_instruction(self) -> str:
        """What a query is embedded after when no instruction is given: the saved
        ``query_instruction``, else ``FALLBACK_QUERY_INSTRUCTION``. Pass ``instruction=""`` to
        embed a query bare."""
        return self.query_instruction or FALLBACK_QUERY_INSTRUCTION

    def replace(self, **changes) -> "GritConfig":
        """A copy with ``changes`` (GritConfig field names) applied; unknown names are a TypeError."""
        unknown = set(changes) - set(field_names())
        if unknown:
            raise TypeError(f"unknown GritConfig field(s) {', '.join(sorted(unknown))}; "
                            f"the fields are {', '.join(field_names())}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {**{name: getattr(self, name) for name in field_names()}, "format": self.format.to_dict(),
                "special_markers": list(self.special_markers)}  # what JSON gives back

    @classmethod
    def from_dict(cls, data: dict, where: str = "GritConfig") -> "GritConfig":
        """Build from ``to_dict``'s output; fields it lacks take their defaults, unknown keys fail."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
        unknown = set(data) - set(field_names())
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                             f"a GritConfig has {', '.join(field_names())}")
        values = dict(data)
        try:
            if "format" in values:
                values["format"] = GritFormat.from_dict(values["format"])
            if isinstance(values.get("special_markers"), list):  # JSON has no tuples
                values["special_markers"] = tuple(values["special_markers"])
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "GritConfig":
        """The config saved in ``directory``, or the defaults for a plain Hugging Face checkpoint."""
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data, str(path))


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(GritConfig))
