"""An exact dense index of a corpus embedded by a GRIT model, optionally with doc caches.

    index = RagIndex.build(model, documents, model_path="path/to/model", cache_docs=True)
    index.save("my-index")
    scores, ids = RagIndex.load("my-index").search(query_vectors, top_k=3)

Search is by cosine similarity of unit vectors: exact (one matrix product) for small indexes,
approximate through FAISS for large ones (``search.py``). A directory holds: ``index.json``
(settings, the search backend and the model that made it), ``embeddings.npy`` (documents x dim,
float16 or float32), ``documents.jsonl`` (one JSON string per line), ``search.faiss`` for an
approximate backend and, with doc caching, ``doc_cache/`` (see ``storage.py``). Saving writes a
temporary sibling and renames it into place; it replaces an earlier index (recognised by its
``index.json``) but no other directory unless told to overwrite it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..files import OutputKind, check_output_dir, replace_dir
from ..model.config import GritConfig
from ..model.gritlm import GritLM
from .kv import check_supported, iter_embed_with_cache
from .search import build_search, load_search
from .storage import DocCacheStore, DocCacheWriter, load_array

# 2: index.json records the whole GritConfig of the model that built it.
INDEX_VERSION = 2
EMBEDDING_DTYPES = ("float16", "float32")
SETTINGS_NAME = "index.json"


def model_signature(grit: GritLM) -> dict:
    """The shape of a model's decoder: an index only works with a model of the same signature."""
    config = grit.model.config.get_text_config()
    return {"model_type": config.model_type, "hidden_size": config.hidden_size,
            "num_hidden_layers": config.num_hidden_layers, "vocab_size": config.vocab_size,
            "num_key_value_heads": getattr(config, "num_key_value_heads", None)}


class RagIndex:
    """Documents, their unit-length embeddings and (optionally) their key/value caches."""

    def __init__(self, documents: list[str], embeddings: np.ndarray, settings: dict,
                 doc_caches: DocCacheStore | None = None, path: Path | None = None, search=None):
        if embeddings.ndim != 2 or embeddings.shape[0] != len(documents):
            raise ValueError(f"embeddings of shape {embeddings.shape} do not match {len(documents)} documents")
        self.documents = documents
        self.embeddings = embeddings
        self.doc_caches = doc_caches
        self.path = path
        self.searcher = search if search is not None else build_search("exact", embeddings)
        self.settings = {**settings, "search": self.searcher.settings}

    def __len__(self) -> int:
        return len(self.documents)

    @classmethod
    def build(cls, grit: GritLM, documents: Sequence[str], model_path: str | os.PathLike | None = None,
              cache_docs: bool = False, cache_dir: str | os.PathLike | None = None, cache_dtype: str = "float16",
              embedding_dtype: str = "float32", max_length: int = 512, query_instruction: str | None = None,
              causal_cache: bool = False, batch_size: int = 8, search: str = "auto",
              nprobe: int | None = None, ef_search: int | None = None) -> "RagIndex":
        """Embed ``documents`` (no instruction, GRIT's document format) in one pass each.

        With ``cache_docs`` the same pass's keys/values are written to ``cache_dir`` (required
        then; ``save`` moves them into the index) in ``cache_dtype``. ``query_instruction`` is
        recorded and placed before every question at ask time; None (the default, recorded as
        null) means the model's ``config.default_query_instruction`` then, as
        ``GritLM.encode_query`` embeds queries; "" embeds questions bare. ``causal_cache`` makes every cache pass causal
        (a check of the plumbing, not GRIT). ``model_path`` (a directory, recorded as an absolute
        path, or a shipped or base model's name, recorded as the name) lets ``load`` find the model.
        ``search`` is the nearest-neighbour backend (``gritkit.rag.search``: ``auto`` is exact for
        small corpora, FAISS IVF for large ones); ``nprobe`` and ``ef_search`` tune IVF and HNSW.
        """
        if embedding_dtype not in EMBEDDING_DTYPES:
            raise ValueError(f"embedding_dtype must be one of {', '.join(EMBEDDING_DTYPES)}, got {embedding_dtype!r}")
        documents = check_documents(documents)
        writer = None
        if cache_docs:
            check_supported(grit.model)
            if cache_dir is None:
                raise ValueError("cache_docs needs a cache_dir to write the doc caches to")
            lengths = [len(ids) for ids, _ in grit.tokenize_for_embedding(documents, [""] * len(documents), max_length)]
            config = grit.model.config.get_text_config()
            head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
            writer = DocCacheWriter(cache_dir, lengths, config.num_hidden_layers, config.num_key_value_heads,
                                    head_dim, cache_dtype)
        vectors = torch.empty((len(documents), 0))
        for indices, batch_vectors, segments in iter_embed_with_cache(
                grit, documents, "", max_length, causal_cache, batch_size, with_cache=cache_docs):
            if vectors.shape[1] == 0:
                vectors = torch.empty((len(documents), batch_vectors.shape[1]))
            vectors[indices] = batch_vectors
            if writer is not None:
                for index, segment in zip(indices, segments):
                    writer.put(index, segment)
        if writer is not None:
            writer.close()
        caches = DocCacheStore(cache_dir) if cache_docs else None
        return cls.from_vectors(grit, documents, vectors.numpy(), model_path=model_path, doc_caches=caches,
                                embedding_dtype=embedding_dtype, max_length=max_length,
                                query_instruction=query_instruction, causal_cache=causal_cache, search=search,
                                nprobe=nprobe, ef_search=ef_search)

    @classmethod
    def from_vectors(cls, grit: GritLM, documents: Sequence[str], vectors: np.ndarray,
                     model_path: str | os.PathLike | None = None, doc_caches: DocCacheStore | None = None,
                     embedding_dtype: str = "float32", max_length: int = 512,
                     query_instruction: str | None = None, causal_cache: bool = False, search: str = "auto", nprobe: int | None = None,
                     ef_search: int | None = None) -> "RagIndex":
        """The index ``build`` makes, from ``vectors`` and ``doc_caches`` that ``build`` computed for
        the documents in parts (by several processes, gritkit/parallel/sharded.py); arguments as in ``build``."""
        settings = {"version": INDEX_VERSION, "model": _model_record(model_path),
                    "model_signature": model_signature(grit), "grit_config": grit.config.to_dict(),
                    "embedding_dtype": embedding_dtype, "max_length": max_length,
                    "query_instruction": query_instruction, "causal_cache": causal_cache,
                    "doc_cache_dtype": doc_caches.dtype if doc_caches is not None else None}
        embeddings = vectors.astype(embedding_dtype)
        return cls(list(documents), embeddings, settings, doc_caches,
                   search=build_search(search, embeddings, nprobe=nprobe, ef_search=ef_search))

    def check_model(self, grit: GritLM) -> None:
        """ValueError unless ``grit`` has the decoder shape and the GritConfig this index was built with.

        A model that pools, attends or formats differently puts queries in another space than
        the stored documents, and its doc caches would not be the ones it computes itself.
        """
        where = f"index {self.path}" if self.path else "this index"
        expected = self.settings["model_signature"]
        if expected != model_signature(grit):
            raise ValueError(f"{where} was made by a model with {expected}, not this one ({model_signature(grit)})")
        # through GritConfig, so that a field added since the index was built compares at its default
        built = GritConfig.from_dict(self.settings["grit_config"]).to_dict()
        given = grit.config.to_dict()
        if built != given:
            changed = ", ".join(f"{k}: index {built.get(k)!r} vs model {given.get(k)!r}"
                                for k in sorted(set(built) | set(given)) if built.get(k) != given.get(k))
            raise ValueError(f"{where} was built by a model with another GRIT configuration ({changed}); "
                             "use that model, or rebuild the index with this one (gritkit rag index)")

    def search(self, queries: torch.Tensor | np.ndarray, top_k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k by cosine similarity: (scores, document ids), each of shape (queries, k); exact or
        approximate as the index's backend (``settings["search"]``) says."""
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None]
        if queries.shape[-1] != self.embeddings.shape[1]:
            raise ValueError(f"query vectors have dimension {queries.shape[-1]}, the index {self.embeddings.shape[1]}")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        return self.searcher.search(queries, min(top_k, len(self)))

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the index to directory ``path`` (replacing one there only once complete).

        An earlier index at ``path`` is replaced; a directory holding anything else (a user's
        other files) only with ``overwrite``, else FileExistsError before anything is written.
        """
        path = check_index_target(path, overwrite)
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        (tmp / SETTINGS_NAME).write_text(json.dumps(self.settings, indent=2) + "\n")
        np.save(tmp / "embeddings.npy", self.embeddings)
        self.searcher.save(tmp)
        with (tmp / "documents.jsonl").open("w", encoding="utf-8") as handle:
            for doc in self.documents:
                handle.write(json.dumps(doc) + "\n")
        if self.doc_caches is not None:
            # A freshly built store is moved (a rename on one file system); a loaded index's is copied.
            transfer = shutil.move if self.path is None else shutil.copytree
            transfer(str(self.doc_caches.directory), str(tmp / "doc_cache"))
        replace_dir(tmp, path)
        if self.doc_caches is not None:
            self.doc_caches = DocCacheStore(path / "doc_cache")
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RagIndex":
        """Open an index directory; embeddings and doc caches are memory-mapped, not read whole."""
        path = Path(path)
        if not (path / SETTINGS_NAME).is_file():
            raise FileNotFoundError(f"no gritkit index at {path} ({SETTINGS_NAME} missing)")
        settings = _read_json(path / SETTINGS_NAME)
        if not isinstance(settings, dict) or settings.get("version") != INDEX_VERSION:
            version = settings.get("version") if isinstance(settings, dict) else None
            raise ValueError(f"{path}/{SETTINGS_NAME}: index version {version!r}, expected {INDEX_VERSION}; "
                             "rebuild it with `gritkit rag index`")
        documents = _read_documents(path / "documents.jsonl")
        embeddings = load_array(path / "embeddings.npy", mmap=True)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(documents):
            raise ValueError(f"{path} is corrupt: embeddings.npy of shape {embeddings.shape} for {len(documents)} "
                             "documents in documents.jsonl; rebuild the index (gritkit rag index)")
        caches = DocCacheStore(path / "doc_cache") if (path / "doc_cache").is_dir() else None
        # an index saved before search backends existed records none: it was searched exactly
        return cls(documents, embeddings, settings, caches, path,
                   search=load_search(path, settings.get("search"), embeddings))


def is_index_dir(path: Path) -> bool:
    """Whether ``path`` holds an index ``RagIndex.save`` wrote: its index.json records a model
    signature (an index.json alone is too common a name to tell)."""
    try:
        settings = json.loads((path / SETTINGS_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(settings, dict) and "model_signature" in settings


INDEX_OUTPUT = OutputKind("gritkit index", is_index_dir)


def check_index_target(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """``path`` once an index may be saved there: absent, empty or an earlier index, unless
    ``overwrite``; else FileExistsError (``gritkit.files.check_output_dir``). ``gritkit rag index``
    calls it before embedding the corpus."""
    return check_output_dir(path, overwrite, INDEX_OUTPUT)


def _read_json(path: Path):
    """The JSON value of ``path``; a ValueError naming it when it is not JSON (a cut-off write)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{path} is truncated or corrupt ({error}); rebuild the index (gritkit rag index)") from None


def _read_documents(path: Path) -> list[str]:
    """The documents of an index's documents.jsonl, one JSON string per line; an error names the line."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; rebuild the index (gritkit rag index)")
    documents, where = [], ""
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                where = f":{number}"
                documents.append(json.loads(line))
    except UnicodeDecodeError as error:  # the text layer reads ahead: no line to name
        raise ValueError(f"{path} is corrupt ({error}); rebuild the index (gritkit rag index)") from None
    except ValueError as error:
        raise ValueError(f"{path}{where} is truncated or corrupt ({error}); rebuild the index "
                         "(gritkit rag index)") from None
    return documents


def check_documents(documents: Sequence[str]) -> list[str]:
    """``documents`` as a list; ValueError for an empty corpus, or naming the first empty or non-string document."""
    documents = list(documents)
    if not documents:
        raise ValueError("cannot build an index of an empty corpus")
    for i, doc in enumerate(documents):
        if not isinstance(doc, str) or not doc.strip():
            raise ValueError(f"document {i} is empty or not a string")
    return documents


def _model_record(model_path) -> str | None:
    """What an index records of its model: a directory's absolute path, or a model name as given
    (a shipped model such as gritkit-smol is rebuilt by name; its cache directory may not last)."""
    if not model_path:
        return None
    path = Path(model_path)
    return str(path.resolve()) if path.is_dir() else str(model_path)
