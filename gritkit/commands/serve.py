"""gritkit serve: an OpenAI-compatible HTTP server for embeddings and generation from one model."""

from __future__ import annotations

import sys

from pathlib import Path

NAME = "serve"
HELP = "serve embeddings and chat/completions from one model over an OpenAI-compatible HTTP API"


def add_arguments(parser) -> None:
    parser.add_argument("--model", default=None,
                        help="model directory (Hugging Face format) or shipped model name (default: gritkit-smol where its base package is installed, else gritkit-tiny)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on every request")
    parser.add_argument("--index", default=None, help="a gritkit rag index directory made with this model: adds POST /v1/rag")
    parser.add_argument("--doc-cache-memory", type=int, default=None, metavar="MB",
                        help="with --index: keep the doc caches of recently retrieved documents in MB of memory "
                             "(least recently used evicted; a missing one is read from the index or embedded "
                             "again), so doc_cache also works on an index built without --cache-docs")
    parser.add_argument("--model-name", default=None, help="model id clients send (default: the directory name)")
    parser.add_argument("--max-input-tokens", type=int, default=512, help="per text or prompt, format included")
    parser.add_argument("--max-batch-size", type=int, default=64, help="texts per embedding request and forward pass")
    parser.add_argument("--max-tokens", type=int, default=512, help="largest max_tokens a request may ask for")
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20)
    parser.add_argument("--max-queue", type=int, default=64, help="requests waiting before 503")
    parser.add_argument("--max-running", type=int, default=16,
                        help="chat requests decoded together in one batch (1: one at a time)")
    parser.add_argument("--query-instruction", default=None,
                        help="instruction used for input_type=query (default: the model's saved one)")
    parser.add_argument("--document-instruction", default=None,
                        help="instruction used for input_type=document (default: the model's saved one; GRIT: none)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for the model (default 0: one fewer than the usable cores, leaving one to "
                             "the HTTP thread; OMP_NUM_THREADS wins when set)")


def run(args) -> int:
    import uvicorn

    from ..model.gritlm import GritLM
    from ..serve import ServeConfig, create_app

    if args.doc_cache_memory is not None and (args.index is None or args.doc_cache_memory < 1):
        raise ValueError("--doc-cache-memory needs --index and a positive number of MB")
    for flag in ("port", "max_input_tokens", "max_batch_size", "max_tokens", "max_body_bytes", "max_queue",
                 "max_running"):
        if getattr(args, flag) < (0 if flag == "port" else 1):
            raise ValueError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    from ..weights.shipped import default_model

    args.model = args.model or default_model(log=lambda note: print(f"gritkit: {note}", file=sys.stderr))
    if args.threads < 0:
        raise ValueError(f"--threads must be 0 (choose) or positive, got {args.threads}")
    model = GritLM.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    if model.device.type == "cpu":
        import torch

        from ..parallel.threads import serving_threads

        torch.set_num_threads(serving_threads(args.threads))
        print(f"gritkit: {torch.get_num_threads()} CPU thread(s) for the model (--threads)", file=sys.stderr)
    rag = None
    if args.index is not None:
        from ..rag import RagPipeline
        from ..rag.cache_pool import DocCachePool

        pool = DocCachePool(args.doc_cache_memory << 20) if args.doc_cache_memory else None
        rag = RagPipeline.load(args.index, model=model, doc_cache_pool=pool)  # the same weights: never a second copy
    config = ServeConfig(model_name=args.model_name or Path(args.model).resolve().name, api_key=args.api_key,
                         max_input_tokens=args.max_input_tokens, max_batch_size=args.max_batch_size,
                         max_tokens_limit=args.max_tokens, max_body_bytes=args.max_body_bytes,
                         max_queue=args.max_queue, max_running=args.max_running,
                         query_instruction=args.query_instruction, document_instruction=args.document_instruction)
    uvicorn.run(create_app(model, config, rag=rag), host=args.host, port=args.port, log_level="info")
    return 0
