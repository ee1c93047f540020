"""Every benchmark's smoke run (``--smoke --json``, in this process unless the script itself starts
processes): it starts on a fresh clone, runs its code path at tiny sizes and ends with its JSON line,
whose keys are checked, and whose ratios are finite positive numbers. No figure is compared with a
target: smoke figures mean nothing."""

from __future__ import annotations

import json
import math
import runpy
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
# Runs that start processes of their own (servers, torchrun, trainings killed and resumed).
SUBPROCESSES = {"fsdp_one_device", "processes", "serve"}

# script -> (the keys of its JSON line, the keys under which every number is a ratio)
SMOKE = {
    "compact_embeddings": ({"quick", "rescore_candidates", "models"}, {"ratio"}),
    "compact_format": ({"tokens_per_sample", "seconds", "encode_speedup", "train_step_speedup", "markers"},
                       {"encode_speedup", "train_step_speedup"}),
    "cuda_parity": ({"model", "device", "low_precision_dtype", "max_abs_difference_float32",
                     "min_cosine_low_precision", "same_greedy_generation"}, set()),
    "data_memory": ({"pairs", "chats", "peak_ratio", "above_imports_ratio", "same_examples_drawn",
                     "chats_above_imports_ratio", "same_tokens_drawn"}, {"peak_ratio"}),
    "decode_levers": ({"model", "tokens", "context", "repeats", "tokens_per_s", "same_tokens", "loop_over_generate",
                       "grouped_over_sdpa"}, {"loop_over_generate", "grouped_over_sdpa"}),
    "doc_cache_scale": ({"size", "int8", "pool"}, {"speedup_over_doc_first"}),
    "encode": ({"model", "texts", "text_tokens", "batch_size", "repeats", "tokens_per_s", "uncapped_speedup",
                "unsorted_speedup", "floor_ratio", "reference_speedup", "reference_largest_difference"},
               {"uncapped_speedup", "unsorted_speedup", "floor_ratio"}),
    "fast_paths": ({"model", "texts", "prompts", "new_tokens", "modes"}, set()),
    "fsdp_one_device": ({"steps", "bf16", "device", "sharded", "resumed"}, set()),
    "generate": ({"model", "new_tokens", "batch", "repeats", "tokens_per_s", "wrapper_ratio_single",
                  "wrapper_ratio_batch", "batch_speedup"},
                 {"wrapper_ratio_single", "wrapper_ratio_batch", "batch_speedup"}),
    "packing": ({"bf16", "cases", "packed_speedup", "single_pass_speedup", "single_pass_over_padded"},
                {"packed_speedup", "single_pass_speedup", "single_pass_over_padded"}),
    "processes": ({"steps", "seconds_per_step", "two_threads_speedup", "two_processes_speedup"},
                  {"two_threads_speedup", "two_processes_speedup"}),
    "prepack": ({"model", "rows", "prefill", "texts", "repeats", "dtypes"}, {"speedup"}),
    "rag_cache": ({"A", "B", "tokens", "by_length", "bytes_per_token", "setup"}, {"speedup", "ideal_speedup"}),
    "rag_quality": ({"task", "model", "questions", "corpus", "top_k", "right_document_in_top_k", "document_tokens",
                     "max_new_tokens",
                     "index_seconds", "engine", "modes", "doc_cache_speedup_over_doc_first", "paper_match", "paper_ordering",
                     "spearman_vs_paper", "per_question"}, {"doc_cache_speedup_over_doc_first"}),
    "search": ({"dim", "queries", "rows"}, {"single_speedup", "batched_speedup"}),
    "self_retrieval": ({"model", "questions", "max_new_tokens", "decision", "needs_document", "without_document",
                        "mixed", "by_kind", "decision_f1", "best_always", "quality_ratio_vs_always",
                        "quality_ratio_text_vs_always", "latency_ratio_vs_always", "latency_ratio_vs_always_text",
                        "needs_quality_self_over_always", "without_quality_self_over_never"},
                       {"latency_ratio_vs_always", "latency_ratio_vs_always_text"}),
    "serve": ({"generation_speedup_16", "embedding_p95_ratio_under_load", "chat", "embedding_p95_idle_s",
               "embedding_p95_under_load_s", "micro_batching_ratio", "server_threads", "long_embedding_request",
               "prepack", "chat_tok_s_with_embeddings", "prefill_pass_tokens"},
              {"generation_speedup_16", "embedding_p95_ratio_under_load", "micro_batching_ratio"}),
    "threads_under_load": ({"steps", "cores", "seconds_per_step", "slowdown", "baseline",
                            "slowdown_against_quiet_baseline"}, {"slowdown", "slowdown_against_quiet_baseline"}),
    "train": ({"step_throughput", "gradcache", "lm_head_on_targets"}, {"ratio", "time_ratio_vs_unchunked", "speedup"}),
}


def scripts() -> set[str]:
    """Every benchmark script (``_shared.py`` is their helper, not one)."""
    return {path.stem for path in BENCHMARKS.glob("*.py") if not path.name.startswith("_")}


def numbers_under(value, names: set[str], inside: bool = False):
    """Every value at any depth below a key in ``names``."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from numbers_under(item, names, inside or key in names)
    elif isinstance(value, list):
        for item in value:
            yield from numbers_under(item, names, inside)
    elif inside:
        yield value


@pytest.fixture
def one_thread():
    """Smoke runs in this process on one thread: two threads beside other jobs on two cores spend
    their time waiting for each other (benchmarks/threads_under_load.py), and nothing is measured."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_every_benchmark_has_a_smoke_test():
    """An entry in SMOKE, or a test file of its own (tests/benchmarks/test_NAME.py) for a script
    whose smoke run needs more checks than its keys (peers.py)."""
    own = {path.stem.removeprefix("test_") for path in Path(__file__).parent.glob("test_*.py")}
    assert scripts() - own == set(SMOKE), "a benchmark without an entry in SMOKE (or an entry without a script)"


@pytest.mark.parametrize("name", [pytest.param(name, marks=[pytest.mark.slow] if name in SUBPROCESSES else [])
                                  for name in sorted(SMOKE)])
def test_smoke_run(name, capsys, one_thread):
    main = runpy.run_path(str(BENCHMARKS / f"{name}.py"), run_name=f"benchmark_{name}")["main"]
    main(["--smoke", "--json"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(line)
    keys, ratio_keys = SMOKE[name]
    assert set(result) == keys
    ratios = list(numbers_under(result, ratio_keys))
    assert len(ratios) >= len(ratio_keys)
    for ratio in ratios:
        assert isinstance(ratio, (int, float)) and not isinstance(ratio, bool), ratio
        assert math.isfinite(ratio) and ratio > 0, ratio


def test_rag_quality_reads_only_documents_of_the_asked_length(capsys, one_thread):
    """``--document-tokens``: the relevant document and its distractors all have MIN-MAX tokens."""
    import sys

    sys.path.insert(0, str(BENCHMARKS))
    from _shared import smoke_data

    from gritkit import GritLM
    from gritkit.evaluate.suite import load_task

    main = runpy.run_path(str(BENCHMARKS / "rag_quality.py"), run_name="benchmark_rag_quality")["main"]
    main(["--smoke", "--json", "--top-k", "2", "--right-document-in-top-k", "--document-tokens", "15-45",
          "--modes", "doc_cache"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["document_tokens"] == [15, 45] and result["questions"] == 2
    corpus = list(load_task(smoke_data(), "faq-qa")["corpus"].values())
    tokenizer = GritLM.from_pretrained("gritkit-tiny").tokenizer
    for question in result["per_question"]:
        assert len(question["documents"]["doc_cache"]) == 2
        for position in question["documents"]["doc_cache"]:
            assert 15 <= len(tokenizer(corpus[position], add_special_tokens=False)["input_ids"]) <= 45


def test_rag_quality_top_k_smoke(capsys, one_thread):
    """``--top-k 2 --right-document-in-top-k``: every RAG answer read two documents, the same two in
    doc caching and doc-first RAG, the relevant one among them (the search alone rarely finds it with
    gritkit-tiny); doc caching's prompt came from caches, no retrieval read nothing."""
    main = runpy.run_path(str(BENCHMARKS / "rag_quality.py"), run_name="benchmark_rag_quality")["main"]
    main(["--smoke", "--json", "--top-k", "2", "--right-document-in-top-k", "--compile"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    modes = result["modes"]
    assert result["engine"]["compile"] is True and result["engine"]["compile_seconds"] > 0
    assert result["top_k"] == 2 and result["right_document_in_top_k"] is True
    assert set(modes) == {"no_rag", "rag_doc_first", "doc_cache", "copy_retrieved"}
    assert len(result["per_question"]) == result["questions"] == 2
    for question in result["per_question"]:
        read = question["documents"]
        assert read["no_rag"] == []
        assert len(read["doc_cache"]) == 2 and len(set(read["doc_cache"])) == 2
        assert read["rag_doc_first"] == read["doc_cache"]
        assert question["right_rank"]["doc_cache"] in (1, 2)
    assert modes["doc_cache"]["documents_read"] == modes["rag_doc_first"]["documents_read"] == 2
    assert modes["no_rag"]["documents_read"] == 0
    assert modes["doc_cache"]["right_doc"] == modes["rag_doc_first"]["right_doc"] == 1.0
    assert modes["doc_cache"]["cached_tokens"] > 0 and modes["rag_doc_first"]["cached_tokens"] == 0
    assert math.isfinite(result["doc_cache_speedup_over_doc_first"]) and result["doc_cache_speedup_over_doc_first"] > 0
