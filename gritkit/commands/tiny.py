"""gritkit tiny: build a small randomly initialised GRIT model with a locally trained tokenizer."""

from __future__ import annotations

NAME = "tiny"
HELP = "build and save a tiny random GRIT model (tokenizer trained locally, no download)"


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True,
                        help="directory to write the model to; a model there is replaced, any other non-empty "
                             "directory is refused unless --overwrite")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out even when it holds files that are not a model (they are deleted)")
    parser.add_argument("--arch", default="llama", help="llama, mistral, qwen2, qwen3, gemma, gpt2 or mixtral")
    parser.add_argument("--corpus", default=None, help="text file to train the tokenizer on (default: stdlib docstrings)")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    from ..textio import read_texts
    from ..model.saving import check_model_target
    from ..model.tiny import build_tiny_model, sample_corpus, train_tokenizer

    check_model_target(args.out, args.overwrite)  # before the tokenizer is trained, not after
    corpus = read_texts(args.corpus) if args.corpus else sample_corpus()
    tokenizer = train_tokenizer(corpus, vocab_size=args.vocab_size)
    model = build_tiny_model(args.arch, tokenizer, seed=args.seed, hidden_size=args.hidden_size,
                             num_layers=args.layers, num_heads=args.heads, num_kv_heads=args.heads)
    model.save_pretrained(args.out, overwrite=args.overwrite)
    params = sum(p.numel() for p in model.model.parameters())
    print(f"saved a random {args.arch} model ({params / 1e6:.2f}M parameters, vocabulary {len(tokenizer)}) to {args.out}")
    return 0
