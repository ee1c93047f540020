"""RAG answer quality per mode on a held-out question -> answer task (the match column of GritLM's RAG table).

    python benchmarks/rag_quality.py --model runs/model                      # faq-qa, 100 questions
    python benchmarks/rag_quality.py --model runs/model --task wordnet-reverse-dictionary --limit 50
    python benchmarks/rag_quality.py --model runs/model --json               # one JSON line
    python benchmarks/rag_quality.py --model gritkit-smol --top-k 3          # doc caching over 3 documents
    python benchmarks/rag_quality.py --model gritkit-smol --top-k 3 --right-document-in-top-k
    python benchmarks/rag_quality.py --model gritkit-smol --top-k 3 --right-document-in-top-k --compile
    python benchmarks/rag_quality.py --model gritkit-smol --top-k 3 --right-document-in-top-k --compile \
        --document-tokens 300-600 --max-length 640 --limit 300
    python benchmarks/rag_quality.py --smoke --json     # gritkit-tiny, 2 questions of a small data build

The task is read from a ``gritkit data build`` (``--data``, ``runs/data`` by default; built there
when missing, one line on stderr saying so and how long it took); its whole
corpus is indexed with ``gritkit.rag.RagIndex`` (doc caches on, the task's retrieval instruction
for queries); each held-out question is answered in every mode through
``RagPipeline.ask`` (top ``--top-k`` documents, 1 by default, greedy) and the answer is scored against the question's
relevant document, which is the answer: the word(s) a definition defines, or the FAQ entry's
answer text. So the retrieved document contains the answer exactly when retrieval is right,
and RAG can help. faq-qa is the default: its questions are natural questions, asked with the same
text for retrieval and generation (as NQ in the paper); its answers are long (median ~110 words),
so 32 new tokens cap ROUGE-L F1 well below 1 in every mode. wordnet-reverse-dictionary has short
answers but its questions must be wrapped in the training prompt ("What word means: ...?") for
generation, and that wrapper is embedded for retrieval too (the pipeline embeds the question asked). Questions are the first ``--limit`` by a hash of their ids (the order the
evaluation suite subsamples in), so runs on different machines score the same questions.

Scores per answer, each the best over the reference's accepted forms (for a definition: the
whole lemma list "actual, existent" and each lemma alone, since training answers name one word):
ROUGE-L F1 (Porter stemming, as the suite's summary task), exact match and token F1 after
SQuAD-style normalisation (lower case, no punctuation or articles). "right doc" is the share of
questions whose relevant document was among the documents read; "docs" the mean number of
documents an answer read; "s/ask" the mean seconds per answer (question embedding, search, cache
concatenation or prompt prefill, generation; one pass, so a loaded machine slows it).

Several documents (``--top-k K``, K > 1): each question's retrieval returns K documents, and by
default only the three modes that matter there are run (``--modes`` picks others, ``all`` every
one): ``doc_cache`` (the K doc caches concatenated in rank order, each moved to its true
position), ``rag_doc_first`` (the same K documents as text, in the same order) and ``no_rag``.
``doc_cache_speedup_over_doc_first`` is doc-first's mean seconds per answer over doc caching's.
``--right-document-in-top-k`` replaces the search's documents by the relevant one among K-1
distractors, the best BM25 matches of the raw question in the task's corpus, at a random rank
(``--seed``), as ``gritkit data rag-reading`` builds its ``doc_cache_multi.jsonl`` lines: reading
quality apart from retrieval quality (the question is still embedded, so the seconds are those of
a real retrieval). The JSON line's ``per_question`` lists the documents each answer read and the
rank of the relevant one among them.

``--document-tokens MIN-MAX`` keeps the questions whose relevant document has MIN to MAX tokens
(the model's tokenizer, no special tokens) and, with ``--right-document-in-top-k``, draws the
distractors from documents of that length too (``--max-length`` must hold MAX and the format):
the long-document rows of the multi-document targets.

``--dtype``, ``--quantize int8`` and ``--compile`` choose the engine every mode answers with
(``engine`` in the JSON line): with ``--compile`` the doc/query caches are copied into the
compiled step's static cache, and every cache size the run can need is compiled before the
first timed answer (``compile_seconds``).
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import statistics
import string
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import data_dir, note, parse_args  # noqa: E402
from gritkit.datasets.common import stable_fraction  # noqa: E402
from gritkit.evaluate.suite import load_task  # noqa: E402
from gritkit.model.gritlm import GritLM  # noqa: E402
from gritkit.rag import MODES, RagIndex, RagPipeline, RetrievedDocument, Retriever  # noqa: E402

# The chat prompt for each task's raw query, as the generative training data asks it, and
# whether the relevant document is a comma-separated list of equally good answers.
TASKS = {
    "wordnet-reverse-dictionary": {"question": "What word means: {query}?", "alternatives": True},
    "faq-qa": {"question": "{query}", "alternatives": False},
}
# GritLM-7B on NQ (the paper's RAG table, "match" column).
PAPER_MATCH = {"no_rag": 21.00, "rag_query_first": 30.50, "query_cache": 25.46, "query_doc_cache": 21.63,
               "rag_doc_first": 30.47, "doc_cache": 33.38, "doc_query_cache": 18.39}
PAPER_ORDER = "doc caching ~ RAG (doc first / query first) > query caching > concatenated caches ~ no RAG"
# The modes run by default with several documents per question: doc caching against its uncached twin
# over the same documents, and no retrieval.
MULTI_DOCUMENT_MODES = ("no_rag", "rag_doc_first", "doc_cache")
FORMAT_ROOM = 16  # tokens --max-length needs beyond --document-tokens' MAX: a document's embedding format


def data_build_dir(args) -> Path:
    """The `gritkit data build` a run reads: ``args.data``, built there first when it holds none (one
    line on stderr: what was built and how long it took), or the smoke build where ``args.data`` is
    None. Never rebuilt when its manifest exists."""
    from gritkit.datasets.build import MANIFEST, build

    if args.data is None:
        return data_dir(args)
    path = Path(args.data)
    if not (path / MANIFEST).is_file():
        start = time.perf_counter()
        manifest = build(path, log=lambda *_: None)
        note(f"built `gritkit data build` in {path} ({len(manifest['files'])} files) "
             f"in {time.perf_counter() - start:.0f} s")
    return data_dir(args)


def normalize(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of precision and recall of the normalised tokens (multiset overlap)."""
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
    if not pred or not ref or common == 0:
        return float(pred == ref)
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def reference_forms(document: str, alternatives: bool) -> list[str]:
    """The accepted answers in a relevant document: itself and, for a lemma list, each lemma."""
    forms = [document]
    if alternatives:
        forms += [part.strip() for part in document.split(",") if part.strip()]
    return forms


class Scorer:
    """ROUGE-L F1, exact match and token F1 of one answer against its best reference form."""

    def __init__(self):
        from rouge_score import rouge_scorer

        self.rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)

    def __call__(self, answer: str, references: list[str]) -> dict[str, float]:
        return {"rougeL": max(self.rouge.score(ref, answer)["rougeL"].fmeasure for ref in references),
                "exact": max(float(normalize(answer) == normalize(ref)) for ref in references),
                "f1": max(token_f1(answer, ref) for ref in references)}


def held_out_questions(task: dict, limit: int, documents: set[str] | None = None) -> list[tuple[str, str]]:
    """(query id, relevant document id) of the first ``limit`` queries in hash order (of those whose
    relevant document is in ``documents``, when given)."""
    ids = sorted(task["queries"], key=lambda k: stable_fraction(f"q:{k}"))
    pairs = [(q, next(iter(task["qrels"][q]))) for q in ids]
    return [(q, d) for q, d in pairs if documents is None or d in documents][:limit]


def token_range(value: str) -> tuple[int, int]:
    """``--document-tokens``: "MIN-MAX" as two ints."""
    low, _, high = value.partition("-")
    try:
        bounds = int(low), int(high)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN-MAX (e.g. 300-600), got {value!r}") from None
    if not 0 < bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError(f"expected 0 < MIN <= MAX, got {value!r}")
    return bounds


def right_among_distractors(corpus: list[str], questions: list[tuple[str, str]], top_k: int,
                            rng: random.Random, eligible: set[int] | None = None) -> list[list[int]]:
    """For each (question, relevant document text): ``top_k`` corpus positions, the relevant document
    among ``top_k - 1`` distractors (the question's best BM25 matches in ``corpus`` with another text,
    best first, as ``gritkit.datasets.rag_reading.among_distractors`` picks them; only corpus positions in
    ``eligible`` when given) at a rank drawn from ``rng``."""
    import bm25s

    first = {}
    for position, text in enumerate(corpus):
        first.setdefault(text, position)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False)
    tokens = bm25s.tokenize([question for question, _ in questions], stopwords="en", show_progress=False)
    # a few more than needed: hits sharing the relevant document's text (or each other's) are skipped
    wanted = 2 * top_k + 8 if eligible is None else 20 * top_k + 100  # the eligible are a few of the hits
    hits, _ = retriever.retrieve(tokens, k=min(wanted, len(corpus)), show_progress=False)
    chosen = []
    for (_, right), row in zip(questions, hits):
        seen, distractors = {right}, []
        for hit in row:
            text = corpus[int(hit)]
            if len(distractors) < top_k - 1 and text not in seen and (eligible is None or first[text] in eligible):
                seen.add(text)
                distractors.append(first[text])
        distractors.insert(rng.randrange(len(distractors) + 1), first[right])
        chosen.append(distractors)
    return chosen


class GivenDocuments(Retriever):
    """A Retriever whose search returns ``given`` (index positions, in that order) while it is set,
    scored as the search would; the question is still embedded as usual."""

    given: list[int] | None = None

    def search(self, vector: torch.Tensor, top_k: int) -> list[RetrievedDocument]:
        if self.given is None:
            return super().search(vector, top_k)
        query = vector.detach().float().cpu().numpy()
        return [RetrievedDocument(i, float(self.index.embeddings[i].astype("float32") @ query), self.index.documents[i])
                for i in self.given]


def _rank(values: dict[str, float]) -> dict[str, float]:
    """1 for the best mode; tied modes share the mean of their ranks."""
    order = sorted(values, key=lambda m: -values[m])
    return {mode: statistics.fmean(i + 1 for i, other in enumerate(order) if values[other] == values[mode])
            for mode in values}


def spearman(a: dict[str, float], b: dict[str, float]) -> float | None:
    """Rank correlation of two per-mode scores (Pearson of the tie-averaged ranks); None if one is constant."""
    ra, rb = _rank(a), _rank(b)
    ma, mb = statistics.fmean(ra.values()), statistics.fmean(rb.values())
    cov = sum((ra[m] - ma) * (rb[m] - mb) for m in ra)
    var_a, var_b = sum((r - ma) ** 2 for r in ra.values()), sum((r - mb) ** 2 for r in rb.values())
    return cov / (var_a * var_b) ** 0.5 if var_a and var_b else None


def compile_every_size(grit: GritLM, tokens: int) -> float:
    """Compile the decode step for every static cache size up to the one holding ``tokens``, so
    that no timed answer waits for a compile; returns the seconds it took."""
    from gritkit.model.compiled_decode import CACHE_SIZES, cache_size

    start = time.perf_counter()
    largest = cache_size(tokens) or CACHE_SIZES[-1]
    filler = grit.tokenizer(" word", add_special_tokens=False)["input_ids"]
    for size in (size for size in CACHE_SIZES if size <= largest):
        prompt = torch.tensor([filler * (size // 2)])
        grit.generate_ids(prompt, torch.ones_like(prompt), max_new_tokens=2)
    return time.perf_counter() - start


def evaluate(pipeline: RagPipeline, task: dict, questions, template: str, alternatives: bool,
             max_new_tokens: int, top_k: int, modes=MODES, given: list[list[int]] | None = None) -> tuple[dict, list]:
    """Per mode: mean scores, share of questions whose relevant document was read, mean ROUGE-L where
    it was, documents read, prompt and cached tokens, seconds; and ``copy_retrieved``: the scores of
    the first document read's first ``max_new_tokens`` tokens. ``given``: each question's documents
    (index positions) in place of the search's (``pipeline.retriever`` a ``GivenDocuments``). Also
    returns, per question, the documents each mode read and the relevant one's rank among them."""
    scorer = Scorer()
    rows = {mode: collections.defaultdict(list) for mode in modes}
    # Not a mode: the first document read as the answer, what copying could score.
    copy_row = rows["copy_retrieved"] = collections.defaultdict(list)
    copy_from = next((m for m in ("rag_doc_first", "doc_cache") if m in modes), None)
    copy_from = copy_from or next((m for m in modes if m != "no_rag"), None)
    from tqdm.auto import tqdm

    tokenizer = pipeline.model.tokenizer
    per_question = []
    # every mode per question: the bar moves once a question is answered in all of them
    for n, (query_id, doc_id) in enumerate(tqdm(questions, desc="questions", unit="question")):
        question = template.format(query=task["queries"][query_id])
        right_text = task["corpus"][doc_id]
        references = reference_forms(right_text, alternatives)
        if given is not None:
            pipeline.retriever.given = given[n]
        read = {"id": query_id, "documents": {}, "right_rank": {}}
        for mode in modes:
            start = time.perf_counter()
            result = pipeline.ask(question, mode=mode, top_k=top_k, max_new_tokens=max_new_tokens, do_sample=False)
            row = rows[mode]
            row["seconds"].append(time.perf_counter() - start)
            for name, value in scorer(result.answer.strip(), references).items():
                row[name].append(value)
            row["documents_read"].append(len(result.documents))
            row["prompt_tokens"].append(result.prompt_tokens)
            row["cached_tokens"].append(result.cached_tokens)
            read["documents"][mode] = [d.id for d in result.documents]
            if result.documents:
                texts = [pipeline.index.documents[d.id] for d in result.documents]
                rank = texts.index(right_text) + 1 if right_text in texts else None
                read["right_rank"][mode] = rank
                row["right_doc"].append(float(rank is not None))
                if rank is not None:
                    row["rougeL_right_doc"].append(row["rougeL"][-1])
                if mode == copy_from:  # every RAG mode reads the same documents
                    first_ids = tokenizer(texts[0], add_special_tokens=False)["input_ids"]
                    copied = tokenizer.decode(first_ids[:max_new_tokens])
                    for name, value in scorer(copied, references).items():
                        copy_row[name].append(value)
        per_question.append(read)
    if given is not None:
        pipeline.retriever.given = None
    summary = {}
    for mode, row in rows.items():
        summary[mode] = {name: (statistics.fmean(values) if values else None) for name, values in row.items()}
        for name in ("right_doc", "rougeL_right_doc", "seconds", "rougeL", "exact", "f1"):
            summary[mode].setdefault(name, None)
    return summary, per_question


def print_table(result: dict) -> None:
    modes = result["modes"]
    run = [m for m in MODES if m in modes]
    ours = _rank({m: modes[m]["rougeL"] for m in run})
    paper = _rank({m: PAPER_MATCH[m] for m in run})
    documents = "document" if result["top_k"] == 1 else "documents"
    given = (f" (the right one among {result['top_k'] - 1} BM25 distractors, seeded rank)"
             if result["right_document_in_top_k"] else "")
    print(f"\n{result['task']}: {result['questions']} held-out questions, top {result['top_k']} {documents}{given}, "
          f"greedy, up to {result['max_new_tokens']} new tokens; model {result['model']}")
    print(f"{'mode':<17}{'ROUGE-L':>9}{'EM':>7}{'F1':>7}{'right doc':>11}{'R-L|right':>11}{'docs':>6}{'s/ask':>8}"
          f"{'rank':>6}   {'paper match':>11}{'rank':>6}")
    for mode in run:
        row = modes[mode]
        right = "" if row["right_doc"] is None else f"{row['right_doc']:.2f}"
        right_rouge = "" if row["rougeL_right_doc"] is None else f"{row['rougeL_right_doc']:.3f}"
        print(f"{mode:<17}{row['rougeL']:>9.3f}{row['exact']:>7.3f}{row['f1']:>7.3f}{right:>11}{right_rouge:>11}"
              f"{row['documents_read']:>6.2g}{row['seconds']:>8.3f}{ours[mode]:>6g}   {PAPER_MATCH[mode]:>11.2f}"
              f"{paper[mode]:>6g}")
    copy = modes["copy_retrieved"]
    if copy["rougeL"] is not None:
        print(f"{'(copy retrieved)':<17}{copy['rougeL']:>9.3f}{copy['exact']:>7.3f}{copy['f1']:>7.3f}"
              f"   <- not a mode: the first document read, its first {result['max_new_tokens']} tokens as the answer")
    speedup = result["doc_cache_speedup_over_doc_first"]
    if speedup is not None:
        print(f"doc caching over doc-first RAG ({result['top_k']} {documents}): {speedup:.2f}x faster per answer")
    print(f"paper ordering: {PAPER_ORDER}")
    rho = result["spearman_vs_paper"]
    print(f"rank correlation (Spearman) of ROUGE-L with the paper's match over the {len(run)} modes run: "
          + ("undefined (every mode scored the same)" if rho is None else f"{rho:+.2f}"))


def chosen_modes(value: str | None, top_k: int) -> tuple[str, ...]:
    """``--modes``: a comma-separated list or ``all``; by default every mode with one document and
    ``MULTI_DOCUMENT_MODES`` with several."""
    if value is None:
        return MODES if top_k == 1 else MULTI_DOCUMENT_MODES
    if value.strip() == "all":
        return MODES
    names = [name.strip().replace("-", "_") for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODES]
    if unknown or not names:
        raise ValueError(f"unknown mode(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(MODES)} or all")
    return tuple(m for m in MODES if m in names)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a trained gritkit model directory or shipped name (required)")
    parser.add_argument("--data", default="runs/data",
                        help="a `gritkit data build` directory (built there when missing)")
    parser.add_argument("--task", default="faq-qa", choices=sorted(TASKS))
    parser.add_argument("--limit", type=int, default=100, help="held-out questions to answer")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=1,
                        help="documents retrieved per question (the paper: 1); above 1 doc caching concatenates "
                             "their caches and is compared with doc-first RAG over the same documents")
    parser.add_argument("--right-document-in-top-k", action="store_true",
                        help="read the right document among TOP_K-1 BM25 distractors at a seeded random rank "
                             "instead of the search's documents (reading quality apart from retrieval quality)")
    parser.add_argument("--seed", type=int, default=0, help="the seed of the right document's ranks")
    parser.add_argument("--modes", default=None,
                        help="comma-separated modes to run, or all (default: all with --top-k 1, else "
                             f"{','.join(MULTI_DOCUMENT_MODES)})")
    parser.add_argument("--document-tokens", type=token_range, default=None, metavar="MIN-MAX",
                        help="only questions whose relevant document (and, with --right-document-in-top-k, "
                             "distractors) has MIN to MAX tokens")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per embedded document or query")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--dtype", default=None, help="weights' dtype (default: float32 on a CPU)")
    parser.add_argument("--quantize", choices=["int8"], default=None, help="int8 weights (GritLM's quantize)")
    parser.add_argument("--compile", action="store_true",
                        help="decode with the compiled step (GritLM's compile=True); every cache size the run can "
                             "need is compiled before the timed answers (compile_seconds)")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    args = parse_args(parser, argv, smoke=dict(model="gritkit-tiny", data=None, limit=2, max_new_tokens=4,
                                               max_length=64, threads=1))
    if not args.model:
        parser.error("--model is required")
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    try:
        modes = chosen_modes(args.modes, args.top_k)
    except ValueError as error:
        parser.error(str(error))
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.document_tokens and args.max_length < args.document_tokens[1] + FORMAT_ROOM:
        parser.error(f"--max-length {args.max_length} cuts documents of up to {args.document_tokens[1]} tokens "
                     f"(their embedding format adds some): pass --max-length {args.document_tokens[1] + FORMAT_ROOM} "
                     "or more")

    spec = TASKS[args.task]
    task = load_task(data_build_dir(args), args.task)
    grit = GritLM.from_pretrained(args.model, dtype=args.dtype, quantize=args.quantize, compile=args.compile)
    in_range = None
    if args.document_tokens:
        low, high = args.document_tokens
        lengths = {doc_id: len(ids) for doc_id, ids in zip(task["corpus"], grit.tokenizer(
            list(task["corpus"].values()), add_special_tokens=False)["input_ids"])}
        in_range = {doc_id for doc_id, length in lengths.items() if low <= length <= high}
    questions = held_out_questions(task, args.limit, in_range)
    if not questions:
        raise SystemExit(f"no held-out question of {args.task} has a relevant document of "
                         f"{args.document_tokens[0]}-{args.document_tokens[1]} tokens")
    compile_seconds = compile_every_size(grit, args.top_k * args.max_length + 128 + args.max_new_tokens) \
        if args.compile else None
    corpus = list(task["corpus"].values())
    given = None
    if args.right_document_in_top_k:
        eligible = None if in_range is None else {i for i, doc_id in enumerate(task["corpus"]) if doc_id in in_range}
        given = right_among_distractors(corpus, [(task["queries"][q], task["corpus"][d]) for q, d in questions],
                                        args.top_k, random.Random(args.seed), eligible)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        index = RagIndex.build(grit, corpus, model_path=args.model, cache_docs=True, cache_dir=Path(tmp) / "cache",
                               max_length=args.max_length, query_instruction=task["instruction"])
        index.save(Path(tmp) / "index")
        index_seconds = time.perf_counter() - start
        pipeline = RagPipeline(grit, index)
        pipeline.retriever = GivenDocuments(grit, index)
        scores, per_question = evaluate(pipeline, task, questions, spec["question"], spec["alternatives"],
                                        args.max_new_tokens, args.top_k, modes, given)
    speedup = None
    if "doc_cache" in scores and "rag_doc_first" in scores and scores["doc_cache"]["seconds"]:
        speedup = scores["rag_doc_first"]["seconds"] / scores["doc_cache"]["seconds"]
    result = {"task": args.task, "model": args.model, "questions": len(questions), "corpus": len(corpus),
              "top_k": args.top_k, "right_document_in_top_k": args.right_document_in_top_k,
              "document_tokens": args.document_tokens,
              "max_new_tokens": args.max_new_tokens, "index_seconds": index_seconds,
              "engine": {"dtype": str(next(grit.model.parameters()).dtype).removeprefix("torch."),
                         "quantize": args.quantize, "compile": args.compile, "compile_seconds": compile_seconds},
              "modes": scores, "doc_cache_speedup_over_doc_first": speedup,
              "paper_match": PAPER_MATCH, "paper_ordering": PAPER_ORDER,
              "spearman_vs_paper": spearman({m: scores[m]["rougeL"] for m in modes},
                                            {m: PAPER_MATCH[m] for m in modes}) if len(modes) > 1 else None,
              "per_question": per_question}
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
