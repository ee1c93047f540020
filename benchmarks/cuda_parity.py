"""CUDA against CPU for one model: embeddings and greedy generation (needs a GPU).

    python benchmarks/cuda_parity.py [--model gritkit-tiny] [--json]
    python benchmarks/cuda_parity.py --smoke --json     # no GPU needed: the CPU against itself

Prints the largest absolute difference between CPU and CUDA float32 embeddings, the smallest
cosine between CPU float32 and CUDA bfloat16 embeddings (the default dtype on a GPU), and
whether greedy generation gives the same text on both devices. ``--smoke`` runs the same
comparisons with the CPU in the GPU's place (bfloat16 asked for explicitly, as the CPU's default
is float32), so the check runs where there is no GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import parse_args  # noqa: E402

TEXTS = ["a tool to compress files", "python library for parsing json", "the act of running quickly",
         "How do I install a package?", "network monitoring daemon with a web interface"]
PROMPTS = ["Summarise the Debian package gzip.", "What does the word 'ephemeral' mean?"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gritkit-tiny")
    parser.add_argument("--new-tokens", type=int, default=24, help="greedy tokens per prompt")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parse_args(parser, argv, smoke=dict(new_tokens=4))
    from gritkit import GritLM

    if args.smoke:  # the CPU stands in for the GPU, and bfloat16 must be asked for there
        device, low_dtype = "cpu", "bfloat16"
    elif torch.cuda.is_available():
        device, low_dtype = "cuda", None  # None: the device's default dtype
    else:
        raise SystemExit("no CUDA device: this check compares CUDA with the CPU (--smoke runs it on the CPU alone)")
    cpu = GritLM.from_pretrained(args.model, dtype="float32", device="cpu")
    full = GritLM.from_pretrained(args.model, dtype="float32", device=device)
    low = GritLM.from_pretrained(args.model, dtype=low_dtype, device=device)
    a, b, c = (m.encode(TEXTS, instruction="Retrieve the package") for m in (cpu, full, low))
    low_name = str(next(low.model.parameters()).dtype)
    difference = float(np.abs(a - b).max())
    cosine = float((a * c).sum(1).min())
    greedy = dict(max_new_tokens=args.new_tokens)
    same = cpu.generate(PROMPTS, **greedy) == full.generate(PROMPTS, **greedy)
    print(f"low-precision dtype on {device}: {low_name}")
    print(f"embeddings, CPU vs {device} float32: max abs difference {difference:.2e}")
    print(f"embeddings, CPU float32 vs {device} {low_name}: min cosine {cosine:.6f}")
    print(f"greedy generation, CPU == {device} float32: {same}")
    if args.json:
        print(json.dumps({"model": args.model, "device": device, "low_precision_dtype": low_name,
                          "max_abs_difference_float32": difference, "min_cosine_low_precision": cosine,
                          "same_greedy_generation": same}))


if __name__ == "__main__":
    main()
