"""gritkit serve: an OpenAI-compatible HTTP server for embeddings and generation from one model."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from ..serve.config import ServeConfig

NAME = "serve"
HELP = "serve embeddings and chat/completions from one model over an OpenAI-compatible HTTP API"

# The ServeConfig fields set by a flag: field -> (flag, help). Each flag's default is the field's,
# read from ServeConfig, so the two cannot drift (tests/serve/test_serve_flags.py). Not here:
# model_name (--model-name, whose default is the model directory's name) and batch_wait_s (a
# tuning knob for tests and benchmarks).
CONFIG_FLAGS = {
    "api_key": ("--api-key", "require 'Authorization: Bearer KEY' on every request (printable ASCII, not empty)"),
    "max_input_tokens": ("--max-input-tokens", "per text or prompt, format included"),
    "max_embedding_inputs": ("--max-embedding-inputs", "texts per embedding request"),
    "max_batch_size": ("--max-batch-size", "texts per forward pass, and per rerank or completions request"),
    "max_tokens_limit": ("--max-tokens", "largest max_tokens a request may ask for"),
    "max_body_bytes": ("--max-body-bytes", None),
    "max_queue": ("--max-queue", "requests waiting before 503"),
    "max_running": ("--max-running", "chat requests decoded together in one batch (1: one at a time)"),
    "prefill_pass_tokens": ("--prefill-pass-tokens",
                            "padded prompt tokens per prefill pass while embedding requests keep arriving: smaller "
                            "keeps embeddings waiting less, larger gives chats more tokens/s (see docs/serving.md)"),
    "query_instruction": ("--query-instruction",
                          "instruction used for input_type=query (default: the model's saved one)"),
    "document_instruction": ("--document-instruction",
                             "instruction used for input_type=document (default: the model's saved one; GRIT: none)"),
}


def add_arguments(parser) -> None:
    parser.add_argument("--model", default=None,
                        help="model directory (Hugging Face format) or shipped model name (default: gritkit-smol where its base package is installed, else gritkit-tiny)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--index", default=None, help="a gritkit rag index directory made with this model: adds POST /v1/rag")
    parser.add_argument("--doc-cache-memory", type=int, default=None, metavar="MB",
                        help="with --index: keep the doc caches of recently retrieved documents in MB of memory "
                             "(least recently used evicted; a missing one is read from the index or embedded "
                             "again), so doc_cache also works on an index built without --cache-docs")
    parser.add_argument("--model-name", default=None, help="model id clients send (default: the directory name)")
    defaults = {field.name: field.default for field in dataclasses.fields(ServeConfig)}
    for name, (flag, text) in CONFIG_FLAGS.items():
        default = defaults[name]
        # dest is the field's name; the metavar is the one argparse would take from the flag.
        parser.add_argument(flag, dest=name, metavar=flag[2:].replace("-", "_").upper(), default=default,
                            type=str if default is None else type(default), help=text)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--quantize", choices=["int8"], default=None,
                        help="int8: weights in 8 bits with a scale per output channel, multiplied in bfloat16 (faster decode, prefill and embedding; see docs/models.md)")
    parser.add_argument("--no-prepack", dest="prepack", action="store_false",
                        help="keep PyTorch's own linear kernels (default on a CPU without --quantize: weights "
                             "reordered once for oneDNN, batched decode steps ~2x faster in float32; see docs/models.md)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for the model (default 0: one fewer than the usable cores, leaving one to "
                             "the HTTP thread; OMP_NUM_THREADS wins when set)")


def serve_config(args) -> ServeConfig:
    """The ServeConfig that parsed ``args`` ask for; ``args.model`` is the model directory."""
    settings = {name: getattr(args, name) for name in CONFIG_FLAGS}
    return ServeConfig(model_name=args.model_name or Path(args.model).resolve().name, **settings)


def run(args) -> int:
    import uvicorn

    from ..model.gritlm import GritLM
    from ..model.prepacked_linear import is_prepacked
    from ..serve import create_app

    if args.doc_cache_memory is not None and (args.index is None or args.doc_cache_memory < 1):
        raise ValueError("--doc-cache-memory needs --index and a positive number of MB")
    if args.port < 0:
        raise ValueError(f"--port must be positive, got {args.port}")
    for name, (flag, _) in CONFIG_FLAGS.items():  # each int setting is a count or a size: at least 1
        value = getattr(args, name)
        if isinstance(value, int) and value < 1:
            raise ValueError(f"{flag} must be positive, got {value}")
    from ..weights.shipped import default_model

    args.model = args.model or default_model(log=lambda note: print(f"gritkit: {note}", file=sys.stderr))
    if args.threads < 0:
        raise ValueError(f"--threads must be 0 (choose) or positive, got {args.threads}")
    config = serve_config(args)  # its checks (the API key's) come before the model is loaded
    model = GritLM.from_pretrained(args.model, device=args.device, dtype=args.dtype,
                                    quantize=args.quantize, prepack="auto" if args.prepack else False)
    if model.device.type == "cpu":
        import torch

        from ..parallel.threads import serving_threads

        torch.set_num_threads(serving_threads(args.threads))
        print(f"gritkit: {torch.get_num_threads()} CPU thread(s) for the model (--threads)", file=sys.stderr)
    if is_prepacked(model.model):
        print("gritkit: linear layers prepacked for oneDNN (--no-prepack keeps PyTorch's kernels)", file=sys.stderr)
    rag = None
    if args.index is not None:
        from ..rag import RagPipeline
        from ..rag.cache_pool import DocCachePool

        pool = DocCachePool(args.doc_cache_memory << 20) if args.doc_cache_memory else None
        rag = RagPipeline.load(args.index, model=model, doc_cache_pool=pool)  # the same weights: never a second copy
    uvicorn.run(create_app(model, config, rag=rag), host=args.host, port=args.port, log_level="info")
    return 0
