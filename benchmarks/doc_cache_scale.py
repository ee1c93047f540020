"""Doc caches at scale: bytes per token, int8 against float16, several documents, a bounded pool.

    python benchmarks/doc_cache_scale.py size                  # bytes per cached token, no model run
    python benchmarks/doc_cache_scale.py int8 [--questions 30] # int8 vs float16 answers, quality by top-k
    python benchmarks/doc_cache_scale.py pool [--questions 200]  # LRU pool: hit rate and s/question
    python benchmarks/doc_cache_scale.py --smoke --json        # all three parts, tiny
    (several parts, or none for all three, may be given; prints one JSON object, {part: figures},
    on one line with --json)

``size``: bytes per cached token (all layers, keys and values) of gritkit-tiny, gritkit-smol
(SmolLM2-135M's shape) and the paper's architecture (Mistral-7B: 32 layers, 8 KV heads of 128), in
float32, float16 and int8 (one float16 scale per key or value vector), and what 2.7M documents of
100 and 150 tokens would need (the paper reports about 30 TB for its 2.7M documents).

``int8``: gritkit-smol on the held-out faq-qa questions of a ``gritkit data build`` (``--data``,
built there when missing):
the task's corpus indexed twice, doc caches in float16 and in int8, each question answered in
doc caching mode (greedy, ``--max-new-tokens``) from the top 1, 2 and 3 documents, and with RAG doc
first (the uncached twin) from the same documents. Reported: the share of int8 answers identical
to the float16 ones and the share of answer tokens before the first difference, ROUGE-L of each
against the reference answer (scored as benchmarks/rag_quality.py does), and store bytes per token.

``pool``: the doc-caching mode served from a ``DocCachePool`` (least recently used documents'
caches within a byte budget, a missing one embedded again) instead of a store of every
document, for questions whose documents follow a Zipf law (exponent 1.1, as retrieval logs do):
the random Llama of benchmarks/rag_cache.py (hidden 512, 4 layers), 400 documents of 500 tokens
(overlapping windows of the sample corpus), each question the first 24 tokens of its document. Seconds per question (mean over the stream,
one warm-up question first) for a pool of 5%, 10% and 25% of the corpus's caches, against the
full store (every document cached, the ideal) and RAG doc first (nothing cached), with hit rates.

``--smoke``: gritkit-smol left out of ``size``; ``int8`` with gritkit-tiny on a small data build,
2 questions; ``pool`` with a random Llama of width 64, 12 documents of 40 tokens, 10 questions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import SMOKE_MODEL, SMOKE_VOCAB, data_dir, note, parse_args, scratch_dir  # noqa: E402

PAPER_DOCUMENTS = 2_700_000
BYTES = {"float32": 4, "float16": 2}
PARTS = ("size", "int8", "pool")
QUESTIONS = {"int8": 30, "pool": 200}  # --questions by default
SMOKE_QUESTIONS = {"int8": 2, "pool": 10}
# pool: tokens per document and per question (the first tokens of its document)
POOL_TOKENS, SMOKE_POOL_TOKENS = (500, 24), (40, 8)


def bytes_per_token(config, dtype: str) -> int:
    """Keys and values of every layer for one token; int8 adds a float16 scale per vector."""
    config = config.get_text_config()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    vectors = config.num_hidden_layers * 2 * config.num_key_value_heads
    return vectors * (head_dim + 2) if dtype == "int8" else vectors * head_dim * BYTES[dtype]


def size_report(smoke: bool) -> dict:
    from transformers import AutoConfig, MistralConfig

    from gritkit.weights.shipped import resolve_model_dir

    configs = {"gritkit-tiny": AutoConfig.from_pretrained(resolve_model_dir("gritkit-tiny"))}
    try:
        if smoke:  # building it on its base the first time takes minutes
            raise FileNotFoundError("left out of a smoke run")
        configs["gritkit-smol (SmolLM2-135M)"] = AutoConfig.from_pretrained(resolve_model_dir("gritkit-smol"))
    except (FileNotFoundError, ImportError) as exc:
        note(f"gritkit-smol skipped: {exc}")
    configs["Mistral-7B shape (the paper's)"] = MistralConfig()  # its defaults are Mistral-7B-v0.1's
    rows = {}
    for name, config in configs.items():
        rows[name] = {dtype: bytes_per_token(config, dtype) for dtype in ("float32", "float16", "int8")}
        for tokens in (100, 150):
            rows[name][f"2.7M x {tokens} tokens, float16 TB"] = rows[name]["float16"] * tokens * PAPER_DOCUMENTS / 1e12
            rows[name][f"2.7M x {tokens} tokens, int8 TB"] = rows[name]["int8"] * tokens * PAPER_DOCUMENTS / 1e12
    return rows


def answer_agreement(a: list[int], b: list[int]) -> float:
    """Share of tokens of ``a`` before its first difference from ``b``."""
    same = 0
    for x, y in zip(a, b):
        if x != y:
            break
        same += 1
    return same / max(len(a), 1)


def int8_report(args, questions: int) -> dict:
    from rag_quality import TASKS, Scorer, held_out_questions, reference_forms

    from gritkit.evaluate.suite import load_task
    from gritkit.model.gritlm import GritLM
    from gritkit.rag import RagIndex, RagPipeline

    task = load_task(data_dir(args), "faq-qa")
    questions = held_out_questions(task, questions)
    corpus_ids = list(task["corpus"])
    documents = [task["corpus"][d] for d in corpus_ids]
    grit = GritLM.from_pretrained(args.model, device="cpu", dtype=torch.float32)
    scorer, template = Scorer(), TASKS["faq-qa"]["question"]
    work = scratch_dir("doc-cache-scale-")
    pipelines = {}
    for dtype in ("float16", "int8"):
        index = RagIndex.build(grit, documents, model_path=args.model, cache_docs=True, cache_dir=work / f"c-{dtype}",
                               cache_dtype=dtype, query_instruction=task["instruction"], max_length=args.max_length)
        pipelines[dtype] = RagPipeline(grit, RagIndex.load(index.save(work / f"i-{dtype}")))
    result = {"questions": len(questions), "documents": len(documents), "model": args.model,
              "bytes_per_token": {d: p.index.doc_caches.bytes_per_token for d, p in pipelines.items()}, "by_k": {}}
    for top_k in (1, 2, 3):
        scores = {"doc_cache float16": [], "doc_cache int8": [], "rag_doc_first": []}
        identical, agreement, seconds = [], [], {"float16": [], "int8": []}
        for query_id, doc_id in questions:
            question = template.format(query=task["queries"][query_id])
            references = reference_forms(task["corpus"][doc_id], False)
            answers = {}
            for dtype, pipeline in pipelines.items():
                start = time.perf_counter()
                answers[dtype] = pipeline.ask(question, mode="doc_cache", top_k=top_k,
                                              max_new_tokens=args.max_new_tokens)
                seconds[dtype].append(time.perf_counter() - start)
                scores[f"doc_cache {dtype}"].append(scorer(answers[dtype].answer.strip(), references)["rougeL"])
            twin = pipelines["float16"].ask(question, mode="rag_doc_first", top_k=top_k,
                                            max_new_tokens=args.max_new_tokens)
            scores["rag_doc_first"].append(scorer(twin.answer.strip(), references)["rougeL"])
            a, b = answers["int8"].answer_token_ids, answers["float16"].answer_token_ids
            identical.append(float(a == b))
            agreement.append(answer_agreement(b, a))
        result["by_k"][top_k] = {"rougeL": {name: statistics.fmean(v) for name, v in scores.items()},
                                 "int8_identical_answers": statistics.fmean(identical),
                                 "int8_tokens_before_first_difference": statistics.fmean(agreement),
                                 "seconds_median": {d: statistics.median(v) for d, v in seconds.items()}}
    return result


def zipf_stream(count: int, documents: int, exponent: float, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, documents + 1) ** exponent
    order = rng.permutation(documents)  # popularity unrelated to position in the corpus
    return [int(order[i]) for i in rng.choice(documents, size=count, p=weights / weights.sum())]


def pool_report(args, questions: int) -> dict:
    from rag_cache import MODEL, VOCAB, text_of_tokens

    from gritkit.rag import RagIndex, RagPipeline
    from gritkit.rag.cache_pool import DocCachePool
    from gritkit.model.tiny import build_tiny_model, sample_corpus, train_tokenizer

    doc_tokens, question_tokens = SMOKE_POOL_TOKENS if args.smoke else POOL_TOKENS
    corpus = sample_corpus()
    tokenizer = train_tokenizer(corpus, vocab_size=SMOKE_VOCAB if args.smoke else VOCAB)
    grit = build_tiny_model("llama", tokenizer, **(SMOKE_MODEL if args.smoke else MODEL))
    ids = tokenizer(" ".join(corpus), add_special_tokens=False)["input_ids"]
    window = doc_tokens + 20
    stride = (len(ids) - window) // args.documents
    if stride < 1:
        raise ValueError(f"the sample corpus has {len(ids)} tokens, too few for {args.documents} documents")
    # overlapping windows of the corpus (it has ~27k tokens): distinct documents of doc_tokens each;
    # the random model's cost does not depend on what the text says
    documents = [text_of_tokens(tokenizer, tokenizer.decode(ids[i * stride: i * stride + window]), doc_tokens)
                 for i in range(args.documents)]
    work = scratch_dir("doc-cache-pool-")
    # questions embedded bare, without an instruction
    stored = RagIndex.load(RagIndex.build(grit, documents, cache_docs=True, cache_dir=work / "c", max_length=window,
                                          query_instruction="").save(work / "stored"))
    bare = RagIndex.load(RagIndex.build(grit, documents, max_length=window, query_instruction="").save(work / "bare"))
    per_doc = stored.doc_caches.bytes_per_token * 2 * doc_tokens  # float32 in memory: twice the float16 store
    stream = [text_of_tokens(tokenizer, documents[d], question_tokens)
              for d in zipf_stream(questions, len(documents), 1.1, 0)]
    setups = {"full store (every document)": (stored, None, "doc_cache"),
              "no cache (RAG doc first)": (bare, None, "rag_doc_first")}
    for share in (0.05, 0.10, 0.25):
        setups[f"pool {share:.0%} of the corpus"] = (bare, DocCachePool(int(share * len(documents) * per_doc)), "doc_cache")
    result = {"documents": len(documents), "questions": len(stream), "rows": {}}
    for name, (index, pool, mode) in setups.items():
        pipeline = RagPipeline(grit, index, doc_cache_pool=pool)
        pipeline.ask(stream[0], mode=mode, max_new_tokens=16, min_new_tokens=16)  # warm-up
        start = time.perf_counter()
        for question in stream:
            pipeline.ask(question, mode=mode, max_new_tokens=16, min_new_tokens=16)
        row = {"seconds_per_question": (time.perf_counter() - start) / len(stream)}
        if pool is not None:
            row.update(pool.stats())
        result["rows"][name] = row
    ideal = result["rows"]["full store (every document)"]["seconds_per_question"]
    uncached = result["rows"]["no cache (RAG doc first)"]["seconds_per_question"]
    for row in result["rows"].values():
        row["speedup_over_doc_first"] = uncached / row["seconds_per_question"]
        row["share_of_full_store_speedup"] = (uncached / row["seconds_per_question"] - 1) / (uncached / ideal - 1)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", metavar="PART", help="size, int8 or pool (default: all three)")
    parser.add_argument("--model", default="gritkit-smol", help="int8: a model directory or shipped name")
    parser.add_argument("--data", default="runs/data",
                        help="int8: a `gritkit data build` directory (built there when missing)")
    parser.add_argument("--questions", type=int, default=None, help="int8: 30 held-out questions; pool: 200")
    parser.add_argument("--documents", type=int, default=400, help="pool: corpus size")
    parser.add_argument("--max-new-tokens", type=int, default=24, help="int8: tokens per answer")
    parser.add_argument("--max-length", type=int, default=512, help="int8: tokens per embedded document")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the JSON object on one line")
    args = parse_args(parser, argv, smoke=dict(model="gritkit-tiny", data=None, documents=12, max_new_tokens=4,
                                               max_length=64, threads=1))
    unknown = [part for part in args.parts if part not in PARTS]
    if unknown:
        parser.error(f"unknown part {', '.join(unknown)}: choose from {', '.join(PARTS)}")
    torch.set_num_threads(args.threads)
    result = {}
    for part in args.parts or PARTS:
        questions = args.questions or (SMOKE_QUESTIONS if args.smoke else QUESTIONS).get(part)
        if part == "size":
            result[part] = size_report(args.smoke)
        elif part == "int8":
            result[part] = int8_report(args, questions)
        else:
            result[part] = pool_report(args, questions)
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
