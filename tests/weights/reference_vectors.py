"""Vectors and greedy tokens of the shipped models, saved once so that a later change to the code
(a move, a refactor) is checked against what the models gave before it.

    python tests/weights/reference_vectors.py   # rewrites reference_vectors.npz (only on purpose)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAVED = Path(__file__).with_name("reference_vectors.npz")
QUERIES = ["how do I list files in a directory", "what does the word serendipity mean"]
DOCUMENTS = ["ls - list directory contents", "cp - copy files and directories",
             "serendipity: the faculty of making fortunate discoveries by accident"]
INSTRUCTION = "Retrieve the manual page or definition that answers the question"
PROMPT = "Name one use of text embeddings."


def compute(name: str) -> dict[str, np.ndarray]:
    """Query and document vectors and 12 greedy tokens of the shipped model ``name``."""
    from gritkit import GritLM

    model = GritLM.from_pretrained(name, device="cpu")
    answer = model.generate(PROMPT, max_new_tokens=12)
    return {f"{name}/queries": model.encode_query(QUERIES, instruction=INSTRUCTION),
            f"{name}/documents": model.encode_document(DOCUMENTS),
            f"{name}/answer": np.array(model.tokenizer(answer, add_special_tokens=False)["input_ids"])}


if __name__ == "__main__":
    arrays = {**compute("gritkit-tiny"), **compute("gritkit-smol")}
    np.savez(SAVED, **arrays)
    print(f"wrote {SAVED}: {', '.join(f'{k} {v.shape}' for k, v in arrays.items())}")
