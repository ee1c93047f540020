"""gritkit data build: training files, held-out evaluation tasks and a tokenizer from real text."""

from __future__ import annotations

NAME = "data"
HELP = "build training data, held-out evaluation tasks and the default tokenizer from real offline corpora"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="build into --out from the shipped copies under data/ (or re-extracted sources)")
    build.add_argument("--out", default=None, help="output directory (default: runs/data)")
    build.add_argument("--refresh", action="store_true",
                       help="re-extract sources from their pinned Debian packages first (needs apt as root and the "
                            "mirror); sources that cannot be extracted fall back to the shipped copies")
    build.add_argument("--workdir", default=None, help="where --refresh downloads and unpacks packages (default: runs/sources)")
    build.add_argument("--force", action="store_true", help="replace an existing build whose manifest differs")
    build.add_argument("--check-length", type=int, default=None,
                       help="report how many chats would be shortened or dropped at this many tokens (default 96)")
    self_retrieval = sub.add_parser(
        "self-retrieval", help="chats that teach a model when to retrieve, and held-out questions to measure it")
    self_retrieval.add_argument("--data", default="runs/data", help="output of `gritkit data build` (default: runs/data)")
    self_retrieval.add_argument("--out", default=None, help="output directory (default: DATA/self_retrieval)")
    reading = sub.add_parser(
        "rag-reading", help="requests answered from one document, as doc caches and as text (training RAG reading)")
    reading.add_argument("--data", default="runs/data", help="output of `gritkit data build` (default: runs/data)")
    reading.add_argument("--out", default=None, help="output directory (default: DATA/rag_reading)")
    questions = sub.add_parser(
        "questions", help="plain questions (no instruction, or the default one) and their documents, for embedding training")
    questions.add_argument("--data", default="runs/data", help="data directory the output goes under (default: runs/data)")
    questions.add_argument("--out", default=None, help="output directory (default: DATA/questions)")


def run(args) -> int:
    if args.data_command == "self-retrieval":
        return _self_retrieval(args)
    if args.data_command == "rag-reading":
        return _rag_reading(args)
    if args.data_command == "questions":
        return _questions(args)
    from ..datasets.build import CHECK_LENGTH, DEFAULT_OUT, build

    if args.check_length is not None and args.check_length < 1:
        raise ValueError(f"--check-length must be a positive number of tokens, got {args.check_length}")
    manifest = build(args.out or DEFAULT_OUT, refresh=args.refresh, force=args.force, workdir=args.workdir,
                     check_length=args.check_length or CHECK_LENGTH)
    print("contrastive: " + ", ".join(f"{k} {v}" for k, v in manifest["contrastive"].items()))
    print("generative: " + ", ".join(f"{k} {v}" for k, v in manifest["generative"].items()))
    print("held-out items: " + ", ".join(f"{k} {v['held_out_items']}" for k, v in manifest["items"].items()))
    return 0


def _self_retrieval(args) -> int:
    from pathlib import Path

    from ..datasets.self_retrieval import build_self_retrieval

    out = args.out or Path(args.data) / "self_retrieval"
    written = build_self_retrieval(args.data, out)
    print(f"wrote {out}: chats " + ", ".join(f"{k} {v}" for k, v in written["chats"].items())
          + f"; {written['doc_cache']} with the document's cache spliced mid-answer; {written['contrastive']} contrastive pairs; {written['eval_corpus']} documents to index and "
          f"{written['eval_questions']['needs_document']} + {written['eval_questions']['without']} held-out "
          "questions (needing a document + not)")
    return 0


def _rag_reading(args) -> int:
    from pathlib import Path

    from ..datasets.rag_reading import build_rag_reading

    out = args.out or Path(args.data) / "rag_reading"
    written = build_rag_reading(args.data, out)
    print(f"wrote {out}/doc_cache.jsonl and {out}/doc_first.jsonl (one document): " + ", ".join(f"{k} {v}" for k, v in written.items())
          + " examples each; their _multi forms (the right document among BM25 distractors) and _long forms "
          "(three long documents)")
    return 0


def _questions(args) -> int:
    from pathlib import Path

    from ..datasets.questions import build_questions

    out = args.out or Path(args.data) / "questions"
    for name, counts in build_questions(out).items():
        print(f"wrote {out}/{name}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
              + " pairs (half after the default query instruction, half bare)")
    return 0
