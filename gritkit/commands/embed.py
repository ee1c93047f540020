"""gritkit embed: embed texts from a file (or stdin) and write .npy or JSONL."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

NAME = "embed"
HELP = "embed texts (one per line, or JSONL) with a GRIT model; write .npy or .jsonl"


def add_arguments(parser) -> None:
    parser.add_argument("--model", default=None,
                        help="model directory (Hugging Face format) or shipped model name (default: gritkit-smol where its base package is installed, else gritkit-tiny)")
    parser.add_argument("--input", default="-", help="text file (one per line) or .jsonl; '-' reads lines from stdin")
    parser.add_argument("--output", default="-", help="output .npy or .jsonl; '-' writes JSONL to stdout")
    parser.add_argument("--instruction", default="", help="instruction placed before every text (none for documents)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=512, help="tokens per text, instruction included")
    parser.add_argument("--no-normalize", action="store_true", help="keep raw pooled vectors instead of unit length")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)


def run(args) -> int:
    from ..model import GritLM
    from ..textio import read_texts

    if args.output != "-" and Path(args.output).suffix not in (".npy", ".jsonl"):
        raise ValueError(f"--output must end in .npy or .jsonl, got {args.output}")
    texts = [line.rstrip("\n") for line in sys.stdin if line.strip()] if args.input == "-" else read_texts(args.input)
    from ..models import default_model

    args.model = args.model or default_model(log=lambda note: print(f"gritkit: {note}", file=sys.stderr))
    model = GritLM.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    vectors = model.encode(texts, instruction=args.instruction, batch_size=args.batch_size,
                           max_length=args.max_length, normalize_embeddings=not args.no_normalize)
    if args.output == "-":
        for index, vector in enumerate(vectors):
            print(json.dumps({"index": index, "embedding": vector.tolist()}))
        return 0
    output = Path(args.output)
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
    print(f"wrote {len(texts)} embeddings of dimension {vectors.shape[1]} to {output}", file=sys.stderr)
    return 0
