"""gritkit embed: embed texts from a file (or stdin) and write .npy or JSONL."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

NAME = "embed"
HELP = ("embed texts (one per line, or JSONL) with a GRIT model; write .npy or .jsonl "
        "(also under torchrun: sharded, resumable)")


def add_arguments(parser) -> None:
    parser.add_argument("--model", default=None,
                        help="model directory (Hugging Face format) or shipped model name (default: gritkit-smol where its base package is installed, else gritkit-tiny)")
    parser.add_argument("--input", default="-", help="text file (one per line) or .jsonl; '-' reads lines from stdin")
    parser.add_argument("--output", default="-",
                        help="output .npy or .jsonl, replaced whole once written; '-' writes JSONL to stdout")
    parser.add_argument("--instruction", default="", help="instruction placed before every text (none for documents)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=512, help="tokens per text, instruction included")
    parser.add_argument("--no-normalize", action="store_true", help="keep raw pooled vectors instead of unit length")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--quantize", choices=["int8"], default=None,
                        help="int8: weights in 8 bits with a scale per output channel, multiplied in bfloat16 (faster decode, prefill and embedding; see docs/models.md)")


def run(args) -> int:
    from ..model.gritlm import GritLM
    from ..weights.shipped import default_model, resolve_model_dir
    from ..parallel.sharded import ShardWork, join_processes, model_settings, run_sharded, under_torchrun, use_shards
    from ..textio import read_stdin_texts, read_texts

    if args.output != "-" and Path(args.output).suffix not in (".npy", ".jsonl"):
        raise ValueError(f"--output must end in .npy or .jsonl, got {args.output}")
    if args.output != "-" and Path(args.output).is_dir():
        raise IsADirectoryError(f"--output {args.output} is a directory, not a file")
    if under_torchrun() and "-" in (args.input, args.output):
        raise ValueError("under torchrun --input and --output must be files, not '-' (stdin/stdout): "
                         "every process reads the input, and the pieces are kept beside the output")
    texts = read_stdin_texts() if args.input == "-" else read_texts(args.input)  # none: an error, nothing written
    args.model = args.model or default_model(log=lambda note: print(f"gritkit: {note}", file=sys.stderr))
    options = dict(instruction=args.instruction, batch_size=args.batch_size, max_length=args.max_length,
                   normalize_embeddings=not args.no_normalize)
    with join_processes() as team:
        model_dir = team.rank_zero_first(lambda: resolve_model_dir(args.model))
        model = GritLM.from_pretrained(args.model, device=team.device(args.device), dtype=args.dtype,
                                          quantize=args.quantize)
        if args.output == "-":
            for index, vector in enumerate(model.encode(texts, **options)):
                print(json.dumps({"index": index, "embedding": vector.tolist()}))
            return 0
        output = Path(args.output)
        work = ShardWork(output, texts, {"command": "embed", **model_settings(model, model_dir),
                                         "instruction": args.instruction, "max_length": args.max_length,
                                         "normalize": not args.no_normalize})
        if not use_shards(work, team):
            write_embeddings(output, model.encode(texts, **options))
        else:
            run_sharded(work, team, lambda part, _: model.encode(part, show_progress_bar=False, **options),
                        lambda vectors, _: write_embeddings(output, vectors))
            if not team.processes.is_main:
                return 0
    print(f"wrote {len(texts)} embeddings of dimension {model.embedding_dim} to {output}", file=sys.stderr)
    return 0


def write_embeddings(output: Path, vectors) -> None:
    """Write ``vectors`` to ``output`` (.npy, or .jsonl of {"index", "embedding"}) whole: into a
    temporary sibling renamed over it, so a failed write leaves a previous output as it was."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    try:
        if output.suffix == ".npy":
            import numpy as np

            with tmp.open("wb") as handle:
                np.save(handle, vectors)
        else:
            with tmp.open("w", encoding="utf-8") as handle:
                for index, vector in enumerate(vectors):
                    handle.write(json.dumps({"index": index, "embedding": vector.tolist()}) + "\n")
        os.replace(tmp, output)  # never leave a half-written output in place
    finally:
        tmp.unlink(missing_ok=True)
