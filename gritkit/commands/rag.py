"""gritkit rag: build an index (optionally with doc caches) and answer questions from it."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

NAME = "rag"
HELP = "retrieval-augmented generation: 'rag index' embeds a corpus, 'rag ask' answers from it"


def add_arguments(parser) -> None:
    from ..rag.modes import MODES
    from ..rag.search import AUTO_ANN_SIZE, DEFAULT_EF_SEARCH, SEARCH_BACKENDS

    sub = parser.add_subparsers(dest="rag_command", metavar="{index,ask}", required=True)
    index = sub.add_parser("index", help="embed a corpus into an index directory (also under torchrun: sharded, resumable)")
    index.add_argument("--model", default=None,
                       help="model directory (Hugging Face format) or shipped model name (default: gritkit-smol where its base package is installed, else gritkit-tiny); recorded in the index")
    index.add_argument("--corpus", required=True, help="documents: text file (one per line) or .jsonl with 'text'")
    index.add_argument("--out", required=True,
                       help="index directory to write; an earlier index there is replaced, any other non-empty "
                            "directory is refused unless --overwrite")
    index.add_argument("--overwrite", action="store_true",
                       help="replace --out even when it holds files that are not a gritkit index (they are deleted)")
    index.add_argument("--cache-docs", action="store_true",
                       help="also store each document's key/value cache (needed by the doc-caching modes)")
    index.add_argument("--cache-dtype", default="float16", choices=["float16", "float32", "int8"],
                       help="doc cache storage: int8 is 52%% of float16 (one scale per key/value vector)")
    index.add_argument("--embedding-dtype", default="float32", choices=["float16", "float32"])
    index.add_argument("--max-length", type=int, default=512, help="tokens per document and query, format included")
    index.add_argument("--query-instruction", default=None,
                       help="instruction placed before every question at ask time (default: the model's own, "
                            "config.default_query_instruction, as encode_query uses; '' embeds questions bare)")
    index.add_argument("--batch-size", type=int, default=8)
    index.add_argument("--search", default="auto", choices=list(SEARCH_BACKENDS),
                       help=f"nearest-neighbour backend: exact, or FAISS ivf/hnsw (auto: exact below {AUTO_ANN_SIZE:,} documents, ivf from there)")
    index.add_argument("--nprobe", type=int, default=None, help="ivf: cells a query scans (default: 5%% of the cells; more is slower and closer to exact)")
    index.add_argument("--ef-search", type=int, default=None, help=f"hnsw: candidates kept while searching (default {DEFAULT_EF_SEARCH})")
    index.add_argument("--device", default=None)
    index.add_argument("--dtype", default=None)
    ask = sub.add_parser("ask", help="retrieve documents for a question and generate an answer")
    _answer_arguments(ask, "print the documents, scores and answer as JSON")
    ask.add_argument("--mode", default="doc_cache", help=f"one of {', '.join(MODES)} (hyphens also accepted)")
    ask.add_argument("--top-k", type=int, default=1)
    chat = sub.add_parser("chat", help="answer with a model that decides itself when to retrieve (self-retrieval)")
    _answer_arguments(chat, "print the answer, retrievals and token counts as JSON")
    chat.add_argument("--retrieve", default="auto", choices=("auto", "always", "never"),
                      help="auto: when the model writes the retrieval marker; always: before answering; never")
    chat.add_argument("--max-retrievals", type=int, default=1)
    chat.add_argument("--top-k", type=int, default=1, help="documents placed per retrieval")
    chat.add_argument("--text", action="store_true", help="read documents as text even when the index has doc caches")


def _answer_arguments(parser, json_help: str) -> None:
    """What ``ask`` and ``chat`` share: the index, the question, the model and the output."""
    parser.add_argument("--index", required=True, help="index directory made by 'gritkit rag index'")
    parser.add_argument("question")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--model", default=None, help="model directory (default: the one recorded in the index)")
    parser.add_argument("--json", action="store_true", help=json_help)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)

def run(args) -> int:
    return {"index": _index, "ask": _ask, "chat": _chat}[args.rag_command](args)


def _index(args) -> int:
    from ..model.gritlm import GritLM
    from ..weights.shipped import default_model, resolve_model_dir
    from ..rag import RagIndex
    from ..rag.index import check_index_target
    from ..parallel.sharded import ShardWork, join_processes, model_settings, use_shards
    from ..textio import read_texts

    documents = read_texts(args.corpus)
    check_index_target(args.out, args.overwrite)  # before the corpus is embedded, not after
    args.model = args.model or default_model(log=lambda note: print(f"gritkit: {note}", file=sys.stderr))
    out = Path(args.out)
    with join_processes() as team:
        model_dir = team.rank_zero_first(lambda: resolve_model_dir(args.model))
        model = GritLM.from_pretrained(args.model, device=team.device(args.device), dtype=args.dtype)
        # what changes the pieces (not query_instruction or search: they are applied when merging)
        work = ShardWork(out, documents, {"command": "rag index", **model_settings(model, model_dir),
                                          "max_length": args.max_length, "embedding_dtype": args.embedding_dtype,
                                          "doc_cache_dtype": args.cache_dtype if args.cache_docs else None})
        if use_shards(work, team):
            index = _index_in_shards(args, model, documents, work, team)
            if not team.processes.is_main:
                return 0
        else:
            cache_dir = out.parent / f".{out.name}.cache-{os.getpid()}"
            try:
                index = RagIndex.build(model, documents, model_path=args.model, cache_docs=args.cache_docs,
                                       cache_dir=cache_dir, cache_dtype=args.cache_dtype,
                                       embedding_dtype=args.embedding_dtype, max_length=args.max_length,
                                       query_instruction=args.query_instruction, batch_size=args.batch_size,
                                       search=args.search, nprobe=args.nprobe, ef_search=args.ef_search)
                index.save(out, overwrite=args.overwrite)
            finally:
                shutil.rmtree(cache_dir, ignore_errors=True)
    extra = ""
    if index.doc_caches is not None:
        extra = f", doc caches {index.doc_caches.bytes_per_token} bytes/token ({index.doc_caches.dtype})"
    print(f"indexed {len(documents)} documents into {out} (search: {index.settings['search']['backend']}){extra}",
          file=sys.stderr)
    return 0


def _index_in_shards(args, model, documents, work, team):
    """``RagIndex.build`` of each piece of the corpus by the processes of ``team``; rank 0 merges the
    pieces' vectors and doc caches into the index at ``args.out`` and returns it (gritkit/parallel/sharded.py)."""
    from ..rag import RagIndex
    from ..rag.index import check_documents
    from ..rag.storage import concatenate_stores
    from ..parallel.sharded import run_sharded

    check_documents(documents)  # here, so that an error names the document's place in the corpus

    def embed(part, directory):  # exact search: a piece's own index is never searched
        return RagIndex.build(model, part, cache_docs=args.cache_docs, cache_dir=directory / "doc_cache",
                              cache_dtype=args.cache_dtype, embedding_dtype=args.embedding_dtype,
                              max_length=args.max_length, batch_size=args.batch_size, search="exact").embeddings

    def merge(vectors, pieces):
        caches = None
        if args.cache_docs:  # a .tmp- name: a run killed while merging leaves nothing a rerun keeps
            caches = concatenate_stores([piece / "doc_cache" for piece in pieces],
                                        work.directory / ".tmp-merged-doc_cache")
        index = RagIndex.from_vectors(model, documents, vectors, model_path=args.model, doc_caches=caches,
                                      embedding_dtype=args.embedding_dtype, max_length=args.max_length,
                                      query_instruction=args.query_instruction, search=args.search,
                                      nprobe=args.nprobe, ef_search=args.ef_search)
        index.save(args.out, overwrite=args.overwrite)
        return index

    return run_sharded(work, team, embed, merge)


def _ask(args) -> int:
    from ..rag import RagPipeline
    from ..rag.modes import normalize_mode

    normalize_mode(args.mode)  # a bad mode fails before the model is loaded
    pipeline = RagPipeline.load(args.index, model=args.model, device=args.device, dtype=args.dtype)
    result = pipeline.ask(args.question, mode=args.mode, top_k=args.top_k, max_new_tokens=args.max_new_tokens)
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    for rank, doc in enumerate(result.documents, start=1):
        print(f"[{rank}] doc {doc.id} score {doc.score:.4f}: {doc.text}")
    print(result.answer)
    return 0


def _chat(args) -> int:
    from ..rag import RagPipeline

    pipeline = RagPipeline.load(args.index, model=args.model, device=args.device, dtype=args.dtype)
    result = pipeline.chat(args.question, max_new_tokens=args.max_new_tokens, max_retrievals=args.max_retrievals,
                           top_k=args.top_k, retrieve=args.retrieve, doc_cache=False if args.text else None)
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    for retrieval in result.retrievals:
        doc = retrieval.document
        print(f"[retrieved after {retrieval.at_token} tokens, {retrieval.source}] doc {doc.id} score {doc.score:.4f}: "
              f"{doc.text}")
    for note in result.notes:
        print(f"note: {note}")
    print(result.answer)
    return 0
