"""The quickstart's show-and-tell: both jobs from the same weights, and its markdown report."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

DEMO_CORPUS = 400  # documents searched in the retrieval demo
LONG_DOC_TOKENS = 2000  # length of the document used for the RAG doc-cache timing


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


def _retrieval(grit, data_dir: Path, log) -> list[dict]:
    task = json.loads((Path(data_dir) / "eval" / "debian-search.json").read_text())
    doc_ids = sorted(task["corpus"])[:DEMO_CORPUS]
    documents = [task["corpus"][d] for d in doc_ids]
    query_ids = [q for q in sorted(task["queries"]) if any(d in doc_ids for d in task["qrels"][q])][:3]
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


def _one_line(text: str) -> str:
    return " ".join(text.split())
