"""CUDA against CPU for one model: embeddings and greedy generation (needs a GPU).

    python benchmarks/cuda_parity.py [--model gritkit-tiny]

Prints the largest absolute difference between CPU and CUDA float32 embeddings, the smallest
cosine between CPU float32 and CUDA bfloat16 embeddings (the default dtype on a GPU), and
whether greedy generation gives the same text on both devices.
"""

import argparse

import numpy as np
import torch

from gritkit import GritLM

TEXTS = ["a tool to compress files", "python library for parsing json", "the act of running quickly",
         "How do I install a package?", "network monitoring daemon with a web interface"]
PROMPTS = ["Summarise the Debian package gzip.", "What does the word 'ephemeral' mean?"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gritkit-tiny")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check compares CUDA with the CPU")
    cpu = GritLM.from_pretrained(args.model, dtype="float32", device="cpu")
    gpu = GritLM.from_pretrained(args.model, dtype="float32", device="cuda")
    bf16 = GritLM.from_pretrained(args.model, device="cuda")
    a, b, c = (m.encode(TEXTS, instruction="Retrieve the package") for m in (cpu, gpu, bf16))
    print(f"default CUDA dtype: {next(bf16.model.parameters()).dtype}")
    print(f"embeddings, CPU vs CUDA float32: max abs difference {float(np.abs(a - b).max()):.2e}")
    print(f"embeddings, CPU float32 vs CUDA {next(bf16.model.parameters()).dtype}: "
          f"min cosine {float((a * c).sum(1).min()):.6f}")
    same = cpu.generate(PROMPTS, max_new_tokens=24) == gpu.generate(PROMPTS, max_new_tokens=24)
    print(f"greedy generation, CPU == CUDA float32: {same}")


if __name__ == "__main__":
    main()
