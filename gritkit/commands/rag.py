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

    sub = parser.add_subparsers(dest="rag_command", metavar="{index,ask}", required=True)
    index = sub.add_parser("index", help="embed a corpus into an index directory")
    index.add_argument("--model", default=None,
                       help="model directory (Hugging Face format) or shipped model name (default: gritkit-smol where its base package is installed, else gritkit-tiny); recorded in the index")
    index.add_argument("--corpus", required=True, help="documents: text file (one per line) or .jsonl with 'text'")
    index.add_argument("--out", required=True, help="index directory to write")
    index.add_argument("--cache-docs", action="store_true",
                       help="also store each document's key/value cache (needed by the doc-caching modes)")
    index.add_argument("--cache-dtype", default="float16", choices=["float16", "float32"])
    index.add_argument("--embedding-dtype", default="float32", choices=["float16", "float32"])
    index.add_argument("--max-length", type=int, default=512, help="tokens per document and query, format included")
    index.add_argument("--query-instruction", default="", help="instruction placed before every query at ask time")
    index.add_argument("--batch-size", type=int, default=8)
    index.add_argument("--device", default=None)
    index.add_argument("--dtype", default=None)
    ask = sub.add_parser("ask", help="retrieve documents for a question and generate an answer")
    ask.add_argument("--index", required=True, help="index directory made by 'gritkit rag index'")
    ask.add_argument("question")
    ask.add_argument("--mode", default="doc_cache", help=f"one of {', '.join(MODES)} (hyphens also accepted)")
    ask.add_argument("--top-k", type=int, default=1)
    ask.add_argument("--max-new-tokens", type=int, default=64)
    ask.add_argument("--model", default=None, help="model directory (default: the one recorded in the index)")
    ask.add_argument("--json", action="store_true", help="print the documents, scores and answer as JSON")
    ask.add_argument("--device", default=None)
    ask.add_argument("--dtype", default=None)


def run(args) -> int:
    return _index(args) if args.rag_command == "index" else _ask(args)


def _index(args) -> int:
    from ..model import GritLM
    from ..rag import RagIndex
    from ..textio import read_texts

    documents = read_texts(args.corpus)
    if not documents:
        raise ValueError(f"{args.corpus}: no documents")
    from ..models import default_model

    args.model = args.model or default_model(log=lambda note: print(f"gritkit: {note}", file=sys.stderr))
    model = GritLM.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    out = Path(args.out)
    cache_dir = out.parent / f".{out.name}.cache-{os.getpid()}"
    try:
        index = RagIndex.build(model, documents, model_path=args.model, cache_docs=args.cache_docs,
                               cache_dir=cache_dir, cache_dtype=args.cache_dtype,
                               embedding_dtype=args.embedding_dtype, max_length=args.max_length,
                               query_instruction=args.query_instruction, batch_size=args.batch_size)
        index.save(out)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    extra = ""
    if index.doc_caches is not None:
        extra = f", doc caches {index.doc_caches.bytes_per_token} bytes/token ({index.doc_caches.dtype})"
    print(f"indexed {len(documents)} documents into {out}{extra}", file=sys.stderr)
    return 0


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
