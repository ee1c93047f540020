"""gritkit demo: build a tiny model, embed with it and generate with it (same weights)."""

from __future__ import annotations

NAME = "demo"
HELP = "show both jobs of one model on a tiny random model built on the spot (a minute on a CPU)"


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="runs/demo/model", help="where to save the tiny model")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out even if it holds files that are not a model (refused otherwise)")


def run(args) -> int:
    import time

    import numpy as np

    from ..model.gritlm import GritLM
    from ..model.tiny import build_tiny_model, sample_corpus, train_tokenizer

    from ..model.saving import check_model_target

    check_model_target(args.out, args.overwrite)  # before the tokenizer is trained, not after
    start = time.perf_counter()
    corpus = sample_corpus()
    tokenizer = train_tokenizer(corpus, vocab_size=4096)
    model = build_tiny_model("llama", tokenizer, hidden_size=128, num_layers=2)
    model.save_pretrained(args.out, overwrite=args.overwrite)
    model = GritLM.from_pretrained(args.out, device="cpu")
    print(f"tokenizer trained on {len(corpus)} stdlib docstring lines; random llama model saved to {args.out}")
    documents = corpus[:200]
    query = documents[7]
    doc_vectors = model.encode_document(documents)
    query_vector = model.encode_query(query, instruction="Find the same sentence")
    scores = doc_vectors @ query_vector
    best = int(np.argmax(scores))
    print(f"embedding: {doc_vectors.shape[0]} documents of dimension {doc_vectors.shape[1]}, unit length")
    print(f"  query {query!r}\n  best match (cosine {scores[best]:.3f}): {documents[best]!r}")
    print(f"generation (random weights, so no meaning yet): {model.generate('Hello', max_new_tokens=12)!r}")
    print(f"done in {time.perf_counter() - start:.1f}s; `gritkit train` turns such a model into a GRIT model")
    return 0
