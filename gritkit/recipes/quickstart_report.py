"""The quickstart's show-and-tell: both jobs from the same weights, and its markdown report.

From scratch: ``demo`` (one model) and ``pretrained_demo`` (gritkit-smol on the same items), then
``write_markdown``. Pretrained (the default): ``side_by_side`` (the untrained base, its fine-tune,
gritkit-smol, BM25 and MiniLM on the same items), then ``write_pretrained_markdown``.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

DEMO_CORPUS = 400  # documents searched in the retrieval demo
LONG_DOC_TOKENS = 2000  # length of the document used for the RAG doc-cache timing
# Pretrained mode: three 135M models embed the searched documents, so fewer of them (the same
# first documents of the held-out Debian search task), and fewer timed RAG answers.
PRETRAINED_DEMO_CORPUS = 200
PRETRAINED_RAG_REPEATS = 2
# System labels of the pretrained mode's results, demo and report (columns of its tables).
BASE_LABEL, FINETUNE_LABEL = "untrained base", "fine-tune"


def demo(grit, data_dir: Path, log=print) -> dict:
    """Print and return a few retrievals, generations and the doc-cache speed-up."""
    return {"retrieval": _retrieval(grit, data_dir, log), "generation": _generation(grit, data_dir, log),
            "rag": _rag_speedup(grit, data_dir, log)}


def pretrained_demo(data_dir: Path, log=print, name: str = "gritkit-smol") -> dict:
    """The same searches and summaries by the shipped fine-tune of a pretrained base, for comparison;
    ``{"skipped": why}`` when its base package is not installed."""
    from ..model.gritlm import GritLM

    try:
        grit = GritLM.from_pretrained(name, device="cpu")
    except FileNotFoundError as missing:  # its base package (BaseNotInstalled) or the model itself
        log(f"    {name} skipped: {missing}")
        return {"skipped": str(missing)}
    log(f"    {name} ({sum(p.numel() for p in grit.model.parameters()) / 1e6:.0f}M parameters, GRIT fine-tune of a pretrained model):")
    return {"model": name, "retrieval": _retrieval(grit, data_dir, log), "generation": _generation(grit, data_dir, log)}


def _search_items(data_dir: Path, corpus: int) -> tuple[dict, list[str], list[str], list[str]]:
    """(task, document ids, documents, 3 query ids) of the search demo: the first ``corpus``
    held-out Debian documents and the first queries with a relevant document among them."""
    task = json.loads((Path(data_dir) / "eval" / "debian-search.json").read_text())
    doc_ids = sorted(task["corpus"])[:corpus]
    documents = [task["corpus"][d] for d in doc_ids]
    query_ids = [q for q in sorted(task["queries"]) if any(d in doc_ids for d in task["qrels"][q])][:3]
    return task, doc_ids, documents, query_ids


def _retrieval(grit, data_dir: Path, log) -> list[dict]:
    task, doc_ids, documents, query_ids = _search_items(data_dir, DEMO_CORPUS)
    doc_vectors = grit.encode_document(documents, max_length=256)
    shown = []
    log(f"    search over {len(documents)} held-out Debian package descriptions:")
    for qid in query_ids:
        scores = doc_vectors @ grit.encode_query(task["queries"][qid], instruction=task["instruction"])
        best = int(scores.argmax())
        hit = doc_ids[best] in task["qrels"][qid]
        shown.append({"query": task["queries"][qid], "top": documents[best][:160], "correct": hit})
        log(f"      {task['queries'][qid]!r}\n        -> {'right' if hit else 'wrong'}: {documents[best][:90]!r}")
    return shown


def _generation(grit, data_dir: Path, log) -> list[dict]:
    items = json.loads((Path(data_dir) / "eval" / "debian-summary.json").read_text())["items"][:3]
    shown = []
    log("    one-line summaries of held-out package descriptions (greedy):")
    for item in items:
        answer = grit.generate(item["prompt"], max_new_tokens=24)
        shown.append({"package": item["id"], "generated": answer, "reference": item["reference"]})
        log(f"      {item['id']}: {answer!r} (reference: {item['reference']!r})")
    return shown


def _rag_speedup(grit, data_dir: Path, log, repeats: int = 3) -> dict:
    """Median seconds to answer over one long document, uncached (doc first) vs doc caching."""
    from ..rag.index import RagIndex
    from ..rag.pipeline import RagPipeline

    task = json.loads((Path(data_dir) / "eval" / "debian-search.json").read_text())
    texts = [task["corpus"][d] for d in sorted(task["corpus"])]
    long_doc, used = "", 0
    while len(grit.tokenizer(long_doc).input_ids) < LONG_DOC_TOKENS and used < len(texts):
        long_doc += texts[used] + "\n"
        used += 1
    question = task["queries"][sorted(task["queries"])[0]]
    with tempfile.TemporaryDirectory() as tmp:
        index = RagIndex.build(grit, [long_doc], cache_docs=True, cache_dir=Path(tmp) / "kv",
                               max_length=LONG_DOC_TOKENS + 64)
        pipeline = RagPipeline(grit, index)
        seconds = {}
        for mode in ("rag_doc_first", "doc_cache"):
            pipeline.ask(question, mode=mode, max_new_tokens=16)  # warm-up
            runs = []
            for _ in range(repeats):
                start = time.perf_counter()
                pipeline.ask(question, mode=mode, max_new_tokens=16)
                runs.append(time.perf_counter() - start)
            seconds[mode] = statistics.median(runs)
    tokens = len(grit.tokenizer(long_doc).input_ids)
    speedup = seconds["rag_doc_first"] / seconds["doc_cache"]
    log(f"    RAG over a {tokens}-token document, 16 new tokens: doc first {seconds['rag_doc_first']:.2f}s, "
        f"doc caching {seconds['doc_cache']:.2f}s -> {speedup:.2f}x (paper, 4,000 tokens on CPU: 2.70x)")
    return {"document_tokens": tokens, "seconds": seconds, "speedup": round(speedup, 2)}


def side_by_side(models: dict, data_dir: Path, rag_model: str | None = None, log=print,
                 corpus: int = PRETRAINED_DEMO_CORPUS) -> dict:
    """Searches and summaries of the same held-out items by every model of ``models``
    (``{label: (directory, GritConfig overrides)}``, loaded one at a time), the searches also by
    BM25 and all-MiniLM-L6-v2 (when installed), and the RAG doc-cache timing of ``rag_model``."""
    from ..evaluate.embedders import MINILM, load_minilm, minilm_available
    from ..evaluate.retrieval import bm25_run
    from ..model.gritlm import GritLM

    task, doc_ids, documents, query_ids = _search_items(data_dir, corpus)
    queries = [task["queries"][q] for q in query_ids]
    items = json.loads((Path(data_dir) / "eval" / "debian-summary.json").read_text())["items"][:3]
    searches = [{"query": task["queries"][q], "systems": {}} for q in query_ids]
    summaries = [{"package": item["id"], "reference": item["reference"], "systems": {}} for item in items]
    parameters, notes, rag = {}, [], None

    def record(label, best):  # best: index into documents per query, None for no document found
        for search, qid, index in zip(searches, query_ids, best):
            search["systems"][label] = (
                {"top": None, "correct": False} if index is None else
                {"top": documents[index][:160], "correct": doc_ids[index] in task["qrels"][qid]})

    for label, (path, overrides) in models.items():
        grit = GritLM.from_pretrained(path, device="cpu", **(overrides or {}))
        parameters[label] = sum(p.numel() for p in grit.model.parameters())
        doc_vectors = grit.encode_document(documents, max_length=256)
        query_vectors = grit.encode_query(queries, instruction=task["instruction"])
        record(label, [int(i) for i in (query_vectors @ doc_vectors.T).argmax(axis=1)])
        for summary, answer in zip(summaries, grit.generate([item["prompt"] for item in items], max_new_tokens=24)):
            summary["systems"][label] = answer
        if label == rag_model:
            rag = _rag_speedup(grit, data_dir, log, repeats=PRETRAINED_RAG_REPEATS)
        del grit
    run = bm25_run(dict(zip(query_ids, queries)), dict(zip(doc_ids, documents)), k=1)
    record("bm25", [doc_ids.index(next(iter(run[q]))) if run.get(q) else None for q in query_ids])
    reason = minilm_available()
    if reason:
        notes.append(f"minilm skipped: {reason}")
    else:
        minilm = load_minilm()
        vectors = minilm.encode_queries(queries) @ minilm.encode_documents(documents).T
        record(MINILM, [int(i) for i in vectors.argmax(axis=1)])

    width = max(len(label) for label in searches[0]["systems"]) if searches else 0
    log(f"    search over {len(documents)} held-out Debian package descriptions, the top document of each:")
    for search in searches:
        log(f"      {search['query']!r}")
        for label, top in search["systems"].items():
            shown = "no document shares a word" if top["top"] is None else repr(_one_line(top["top"])[:80])
            log(f"        {label:<{width}}  {'right' if top['correct'] else 'wrong'}: {shown}")
    log("    one-line summaries of held-out package descriptions (greedy):")
    for summary in summaries:
        log(f"      {summary['package']} (reference: {summary['reference']!r})")
        for label, answer in summary["systems"].items():
            log(f"        {label:<{width}}  {_one_line(answer)!r}")
    for note in notes:
        log(f"    {note}")
    return {"corpus": len(documents), "searches": searches, "summaries": summaries, "rag": rag, "rag_model": rag_model,
            "parameters": parameters, "notes": notes}


def write_markdown(path: Path, summary: dict, results: dict, files: list) -> None:
    """``report.md``: what was trained, how it scored next to the baselines, what it shows."""
    from ..evaluate.report import markdown_table

    recipe = summary["recipe"]
    collapse = summary["collapse"]
    lines = [
        "# gritkit quickstart report", "",
        f"A {summary['parameters'] / 1e6:.2f}M-parameter Llama ({recipe['num_layers']} layers, width "
        f"{recipe['hidden_size']}) trained from scratch in unified mode for {summary['train_minutes']} minutes: "
        f"{summary['steps']} steps, {summary['tokens_seen']:,} tokens. Whole run: {summary['total_minutes']} minutes.", "",
        f"Contrastive loss over the last fifth of the run: {collapse['final_loss_rep']} (chance "
        f"{collapse['chance']}): {'COLLAPSED' if collapse['collapsed'] else 'no collapse'}.", "",
        "![training losses](losses.png)", "",
        *(_targets_lines(summary["targets"]) if "targets" in summary else []),
        "## Scores next to the baselines (evaluation subsample: `--quick` sizes)", "",
        markdown_table(results), "",
        "## Both jobs from the same weights", "",
    ]
    for item in summary["demo"]["retrieval"]:
        lines.append(f"- search `{item['query']}` -> {'right' if item['correct'] else 'wrong'}: "
                     f"{_one_line(item['top'][:100])}")
    lines.append("")
    for item in summary["demo"]["generation"]:
        lines.append(f"- summary of `{item['package']}`: {json.dumps(item['generated'])} "
                     f"(reference: {json.dumps(item['reference'])})")
    rag = summary["demo"]["rag"]
    lines += ["", f"RAG over a {rag['document_tokens']}-token document: doc first "
              f"{rag['seconds']['rag_doc_first']:.2f} s, doc caching {rag['seconds']['doc_cache']:.2f} s: "
              f"{rag['speedup']}x.", ""]
    smol = summary.get("pretrained_demo", {})
    if "skipped" in smol:
        lines += [f"The pretrained comparison was skipped: {smol['skipped']}", ""]
    elif smol:
        lines += [f"## The same items by {smol['model']} (GRIT fine-tune of a pretrained model, shipped)", ""]
        lines += [f"- search `{item['query']}` -> {'right' if item['correct'] else 'wrong'}: {_one_line(item['top'][:100])}"
                  for item in smol["retrieval"]]
        lines += [f"- summary of `{item['package']}`: {json.dumps(item['generated'])}" for item in smol["generation"]]
        lines.append("")
    lines += [f"![{Path(p).stem}]({Path(p).name})" for p in files if str(p).endswith(".png") and "losses" not in str(p)]
    Path(path).write_text("\n".join(lines) + "\n")


def _targets_lines(targets: dict) -> list[str]:
    """The from-scratch recipe's targets as a table."""
    lines = ["## Targets", "", "| target | value | met |", "|---|---|---|"]
    lines += [f"| {row['target']} | {row['value']} | {'met' if row['met'] else '**missed**'} |" for row in targets["rows"]]
    return lines + ["", "Every target met." if targets["all_met"] else "Some targets missed.", ""]


def write_pretrained_markdown(path: Path, summary: dict, results: dict, files: list) -> None:
    """``report.md`` of the pretrained mode: what was fine-tuned, the targets, the scores and the
    searches and summaries of every system side by side."""
    from ..evaluate.report import markdown_table

    recipe, collapse, targets, shown = summary["recipe"], summary["collapse"], summary["targets"], summary["demo"]
    base, tuned = BASE_LABEL, FINETUNE_LABEL
    lora = (f"LoRA (rank {recipe['lora_r']}, alpha {recipe['lora_alpha']}, on {', '.join(recipe['lora_target_modules'])})"
            if recipe["lora_r"] else "all weights trained")
    timings = summary["timings"]
    read = {source: [who for who, key in ((base, "base_eval_s"), (summary.get("shipped"), "shipped_eval_s"))
                     if who and timings.get(key) == source] for source in ("cached", "reference")}
    lines = [
        "# gritkit quickstart report: GRIT fine-tuning of a pretrained model", "",
        f"Base: **{summary['base']}** ({summary['parameters'] / 1e6:.1f}M parameters"
        + (f", imported to `{summary['base_dir']}`" if summary["base_dir"] != summary["base"] else "") + "), "
        
        f"fine-tuned in unified mode (contrastive + next-token loss) with {lora} for {summary['train_minutes']} minutes: "
        f"{summary['steps']} steps, {summary['tokens_seen']:,} tokens. Whole run: {summary['total_minutes']} minutes"
        + (" (over the budget: the evaluations before training left less than the minimum training time)"
           if summary["budget_overrun"] else "")
        + (f"; results of {' and '.join(read['cached'])} read from the cache" if read["cached"] else "")
        + (f"; results of {' and '.join(read['reference'])} read from the shipped reference results "
           "(gritkit/recipes/quickstart_reference/: the same model files and data build)" if read["reference"] else "")
        + ".", "",
        f"Systems: **{base}** is {summary['base']} before any training, embedding as GRIT does "
        f"({recipe['attention']} attention, {recipe['pooling']} pooling, its format's instruction prompt); "
        f"**{tuned}** is this run's model (`{summary['model']}`)"
        + (f"; **{summary['shipped']}** is " + ("the shipped GRIT fine-tune of SmolLM2-135M-Instruct (398 steps of "
                                                 "configs/gritkit-smol.yaml, then its RAG phase)"
                                                 if summary["shipped"] == "gritkit-smol" else "a trained model to compare with")
           if summary.get("shipped") else "")
        + "; bm25, tfidf, lead (first words as the summary), uniform, random vectors and minilm "
        "(all-MiniLM-L6-v2, when installed) are the suite's baselines.", "",
        "## Targets", "",
        f"{targets['embedding']['target']}: **{'met' if targets['embedding']['met'] else 'missed'}**", "",
        f"| task | metric | {base} | {tuned} | met |", "|---|---|---|---|---|",
    ]
    lines += [f"| {r['task']} | {r['metric']} | {r['base']:.4f} | {r['fine_tune']:.4f} | {'yes' if r['met'] else '**no**'} |"
              for r in targets["embedding"]["tasks"]]
    perplexity = targets["perplexity"]
    lines += [""]
    if "limit" in perplexity:
        lines += [f"{perplexity['target']}: **{'met' if perplexity['met'] else 'missed'}**: {tuned} "
                  f"{perplexity['fine_tune']:.2f} against {base} {perplexity['base']:.2f} (at most "
                  f"{perplexity['limit']:.2f}; ratio {perplexity['ratio']:.3f})", ""]
    else:
        lines += [f"{perplexity['target']}: **missed**: {perplexity['note']}", ""]
    lines += ["Every target met." if targets["all_met"] else "Some targets missed.", "",
              f"Contrastive loss over the last fifth of the run: {collapse['final_loss_rep']} (chance "
              f"{collapse['chance']}): {'COLLAPSED' if collapse['collapsed'] else 'no collapse'}.", "",
              "![training losses](losses.png)", "",
              "## Scores side by side (evaluation subsample: `--quick` sizes)", "",
              markdown_table(results), "",
              "Perplexity is per token of each model's tokenizer: the base and its fine-tune share one.", "",
              f"## Searches side by side ({shown['corpus']} held-out Debian package descriptions, top document)", ""]
    names = {base: f"{base} ({summary['base']})", tuned: f"{tuned} (this run)"}
    for search in shown["searches"]:
        lines.append(f"- `{search['query']}`")
        for label, top in search["systems"].items():
            text = "no document shares a word" if top["top"] is None else _one_line(top["top"][:100])
            lines.append(f"  - {names.get(label, label)}: {'right' if top['correct'] else 'wrong'}: {text}")
    lines += ["", "## Summaries side by side (held-out package descriptions, greedy)", ""]
    for item in shown["summaries"]:
        lines.append(f"- `{item['package']}` (reference: {json.dumps(item['reference'])})")
        lines += [f"  - {names.get(label, label)}: {json.dumps(answer)}" for label, answer in item["systems"].items()]
    rag = shown.get("rag")
    if rag:
        lines += ["", "## RAG from caches", "",
                  f"The {shown['rag_model']} answering over a {rag['document_tokens']}-token document (16 new tokens): "
                  f"doc first {rag['seconds']['rag_doc_first']:.2f} s, doc caching (the document's key/value cache "
                  f"kept from its embedding pass) {rag['seconds']['doc_cache']:.2f} s: {rag['speedup']}x."]
    lines += [""] + [f"- {note}" for note in shown.get("notes", []) if note not in results.get("notes", [])] + [""]
    lines += [f"![{Path(p).stem}]({Path(p).name})" for p in files if str(p).endswith(".png") and "losses" not in str(p)]
    Path(path).write_text("\n".join(lines) + "\n")


def _one_line(text: str) -> str:
    return " ".join(text.split())
