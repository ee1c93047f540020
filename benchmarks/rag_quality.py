"""RAG answer quality per mode on a held-out question -> answer task (the match column of GritLM's RAG table).

    python benchmarks/rag_quality.py --model runs/model                      # faq-qa, 100 questions
    python benchmarks/rag_quality.py --model runs/model --task wordnet-reverse-dictionary --limit 50
    python benchmarks/rag_quality.py --model runs/model --json               # one JSON line
    python benchmarks/rag_quality.py --smoke --json     # gritkit-tiny, 2 questions of a small data build

The task is read from a ``gritkit data build`` (``--data``, built there when missing); its whole
corpus is indexed with ``gritkit.rag.RagIndex`` (doc caches on, the task's retrieval instruction
for queries); each held-out question is answered in every mode through
``RagPipeline.ask`` (top 1 document, greedy) and the answer is scored against the question's
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
questions whose retrieved document was the relevant one.
"""

from __future__ import annotations

import argparse
import collections
import json
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

from _shared import data_dir, parse_args  # noqa: E402
from gritkit.datasets.common import stable_fraction  # noqa: E402
from gritkit.evaluate.suite import load_task  # noqa: E402
from gritkit.model.gritlm import GritLM  # noqa: E402
from gritkit.rag import MODES, RagIndex, RagPipeline  # noqa: E402

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


def held_out_questions(task: dict, limit: int) -> list[tuple[str, str]]:
    """(query id, relevant document id) of the first ``limit`` queries in hash order."""
    ids = sorted(task["queries"], key=lambda k: stable_fraction(f"q:{k}"))[:limit]
    return [(q, next(iter(task["qrels"][q]))) for q in ids]


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


def evaluate(pipeline: RagPipeline, task: dict, questions, template: str, alternatives: bool,
             max_new_tokens: int, top_k: int) -> dict:
    """Per mode: mean scores, share of right documents, mean ROUGE-L where the document was right, seconds;
    and ``copy_retrieved``: the scores of the retrieved document's first ``max_new_tokens`` tokens."""
    scorer = Scorer()
    rows = {mode: collections.defaultdict(list) for mode in MODES}
    # Not a mode: the retrieved document's first tokens as the answer, what copying could score.
    copy_row = rows["copy_retrieved"] = collections.defaultdict(list)
    from tqdm.auto import tqdm

    tokenizer = pipeline.model.tokenizer
    # every mode per question: the bar moves once a question is answered in all of them
    for query_id, doc_id in tqdm(questions, desc="questions", unit="question"):
        question = template.format(query=task["queries"][query_id])
        references = reference_forms(task["corpus"][doc_id], alternatives)
        for mode in MODES:
            start = time.perf_counter()
            result = pipeline.ask(question, mode=mode, top_k=top_k, max_new_tokens=max_new_tokens, do_sample=False)
            row = rows[mode]
            row["seconds"].append(time.perf_counter() - start)
            for name, value in scorer(result.answer.strip(), references).items():
                row[name].append(value)
            if result.documents:
                retrieved = pipeline.index.documents[result.documents[0].id]
                right = retrieved == task["corpus"][doc_id]
                row["right_doc"].append(float(right))
                if right:
                    row["rougeL_right_doc"].append(row["rougeL"][-1])
                if mode == "rag_doc_first":  # every RAG mode retrieves the same document
                    copied = tokenizer.decode(tokenizer(retrieved, add_special_tokens=False)["input_ids"][:max_new_tokens])
                    for name, value in scorer(copied, references).items():
                        copy_row[name].append(value)
    summary = {}
    for mode, row in rows.items():
        summary[mode] = {name: (statistics.fmean(values) if values else None) for name, values in row.items()}
        for name in ("right_doc", "rougeL_right_doc", "seconds"):
            summary[mode].setdefault(name, None)
    return summary


def print_table(result: dict) -> None:
    modes = result["modes"]
    ours = _rank({m: modes[m]["rougeL"] for m in MODES})
    paper = _rank(PAPER_MATCH)
    print(f"\n{result['task']}: {result['questions']} held-out questions, top {result['top_k']} document, "
          f"greedy, up to {result['max_new_tokens']} new tokens; model {result['model']}")
    print(f"{'mode':<17}{'ROUGE-L':>9}{'EM':>7}{'F1':>7}{'right doc':>11}{'R-L|right':>11}{'s/ask':>8}"
          f"{'rank':>6}   {'paper match':>11}{'rank':>6}")
    for mode in MODES:
        row = modes[mode]
        right = "" if row["right_doc"] is None else f"{row['right_doc']:.2f}"
        right_rouge = "" if row["rougeL_right_doc"] is None else f"{row['rougeL_right_doc']:.3f}"
        print(f"{mode:<17}{row['rougeL']:>9.3f}{row['exact']:>7.3f}{row['f1']:>7.3f}{right:>11}{right_rouge:>11}"
              f"{row['seconds']:>8.3f}{ours[mode]:>6g}   {PAPER_MATCH[mode]:>11.2f}{paper[mode]:>6g}")
    copy = modes["copy_retrieved"]
    print(f"{'(copy retrieved)':<17}{copy['rougeL']:>9.3f}{copy['exact']:>7.3f}{copy['f1']:>7.3f}"
          f"   <- not a mode: the retrieved document's first {result['max_new_tokens']} tokens as the answer")
    print(f"paper ordering: {PAPER_ORDER}")
    rho = result["spearman_vs_paper"]
    print("rank correlation (Spearman) of ROUGE-L with the paper's match: "
          + ("undefined (every mode scored the same)" if rho is None else f"{rho:+.2f}"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a trained gritkit model directory or shipped name (required)")
    parser.add_argument("--data", default="runs/data",
                        help="a `gritkit data build` directory (built there when missing)")
    parser.add_argument("--task", default="faq-qa", choices=sorted(TASKS))
    parser.add_argument("--limit", type=int, default=100, help="held-out questions to answer")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=1, help="documents retrieved per question (the paper: 1)")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per embedded document or query")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    args = parse_args(parser, argv, smoke=dict(model="gritkit-tiny", data=None, limit=2, max_new_tokens=4,
                                               max_length=64, threads=1))
    if not args.model:
        parser.error("--model is required")
    if args.threads:
        torch.set_num_threads(args.threads)

    spec = TASKS[args.task]
    task = load_task(data_dir(args), args.task)
    questions = held_out_questions(task, args.limit)
    grit = GritLM.from_pretrained(args.model)
    corpus = list(task["corpus"].values())
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        index = RagIndex.build(grit, corpus, model_path=args.model, cache_docs=True, cache_dir=Path(tmp) / "cache",
                               max_length=args.max_length, query_instruction=task["instruction"])
        index.save(Path(tmp) / "index")
        index_seconds = time.perf_counter() - start
        pipeline = RagPipeline(grit, index)
        modes = evaluate(pipeline, task, questions, spec["question"], spec["alternatives"], args.max_new_tokens,
                         args.top_k)
    result = {"task": args.task, "model": args.model, "questions": len(questions), "corpus": len(corpus),
              "top_k": args.top_k, "max_new_tokens": args.max_new_tokens, "index_seconds": index_seconds,
              "modes": modes, "paper_match": PAPER_MATCH, "paper_ordering": PAPER_ORDER,
              "spearman_vs_paper": spearman({m: modes[m]["rougeL"] for m in MODES}, PAPER_MATCH)}
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
