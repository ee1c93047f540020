"""The evaluation suite: metrics against hand computations, perplexity against transformers' loss,
the suite end to end on a tiny model, the mteb adapter against our own scores, and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gritkit.evaluate import classification, generation, retrieval
from gritkit.evaluate.embedders import RandomEmbedder


def test_retrieval_metrics_match_hand_computation():
    qrels = {"q1": {"d2": 1}, "q2": {"d1": 1, "d3": 1}, "q3": {"d4": 1}}
    run = {"q1": {"d1": 0.9, "d2": 0.5, "d3": 0.1},
           "q2": {"d1": 0.8, "d2": 0.7, "d3": 0.6},
           "q3": {"d1": 0.3}}  # its relevant document is not retrieved
    ndcg_q1 = 1 / math.log2(3)
    ndcg_q2 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    scores = retrieval.scores_from_run(run, qrels)
    assert scores["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2 + 0) / 3)
    assert scores["mrr@10"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert scores["recall@100"] == pytest.approx((1 + 1 + 0) / 3)


def test_mrr_is_cut_at_ten():
    run = {"q": {f"d{i:02d}": 100.0 - i for i in range(12)}}
    assert retrieval.scores_from_run(run, {"q": {"d11": 1}})["mrr@10"] == 0.0
    assert retrieval.scores_from_run(run, {"q": {"d09": 1}})["mrr@10"] == pytest.approx(0.1)


def test_dense_run_ranks_by_dot_product():
    queries = np.array([[1.0, 0.0], [0.0, 1.0]])
    docs = np.array([[0.6, 0.8], [1.0, 0.0], [0.0, -1.0]])
    run = retrieval.dense_run(queries, docs, ["a", "b"], ["x", "y", "z"], k=2)
    assert run == {"a": {"y": 1.0, "x": pytest.approx(0.6)}, "b": {"x": pytest.approx(0.8), "y": 0.0}}


def test_bm25_finds_the_document_with_the_rare_term():
    corpus = {"1": "the cat sat on the mat", "2": "the dog chased the ball", "3": "a quantum cat in a box"}
    run = retrieval.bm25_run({"q": "quantum box"}, corpus)
    assert max(run["q"], key=run["q"].get) == "3" and "2" not in run["q"]


def test_classification_and_clustering_on_separable_data():
    rng = np.random.default_rng(0)
    labels = ["a"] * 40 + ["b"] * 40
    features = np.concatenate([rng.normal(0, 0.1, (40, 4)) + 5, rng.normal(0, 0.1, (40, 4)) - 5])
    ids = [str(i) for i in range(80)]
    assert classification.classify(features, labels, ids)["accuracy"] == 1.0
    assert classification.cluster(features, labels)["v_measure"] == pytest.approx(1.0)


def test_rouge_l_matches_hand_lcs():
    # LCS("the cat sat", "the cat on the mat sat") = 3: P = 1, R = 1/2, F = 2/3.
    assert generation.rouge_l(["the cat sat"], ["the cat on the mat sat"])["rougeL"] == pytest.approx(2 / 3)


def test_random_embedder_is_fixed_per_text():
    e = RandomEmbedder(dim=16)
    a, b = e.encode_documents(["x", "y"]), e.encode_queries(["x"], "any instruction")
    assert np.allclose(a[0], b[0]) and not np.allclose(a[0], a[1])
    assert np.allclose(np.linalg.norm(a, axis=1), 1)


def test_perplexity_matches_transformers_loss_on_answer_tokens(tiny_llama):
    chats = [{"messages": [{"role": "user", "content": "Define the word cat."},
                           {"role": "assistant", "content": "a small domesticated feline"}]},
             {"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}]}]
    total, count = 0.0, 0
    for chat in chats:
        ids, labels = generation.answer_labels(tiny_llama, chat["messages"], 512)
        answer = [t for t in labels if t != -100]
        assert tiny_llama.tokenizer.decode(answer) == chat["messages"][1]["content"] + tiny_llama.tokenizer.eos_token
        with torch.no_grad():
            loss = tiny_llama.model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
        n = len(answer)
        total, count = total + float(loss) * n, count + n
    result = generation.perplexity(tiny_llama, chats, batch_size=2)
    assert result["tokens"] == count
    assert result["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-4)


@pytest.fixture(scope="module")
def eval_data(small_build):
    return small_build[0]


def test_suite_scores_model_and_baselines(tiny_llama, eval_data, tmp_path):
    from gritkit.evaluate import evaluate
    from gritkit.evaluate.report import write_report
    from gritkit.evaluate.suite import subsample, load_task
    from gritkit.evaluate.embedders import GritEmbedder

    tasks = ["faq-qa", "wordnet-supersense-classification", "wordnet-supersense-clustering", "debian-summary",
             "heldout-perplexity"]
    results = evaluate(tiny_llama, tasks=tasks, quick=True, data_dir=eval_data, baselines=("lexical", "random"),
                       log=lambda *_: None)
    assert set(results["tasks"]) == set(tasks)
    faq = results["tasks"]["faq-qa"]
    assert set(faq) >= {"model", "bm25", "random"} and set(faq["model"]) == {"ndcg@10", "mrr@10", "recall@100"}
    # The suite's number is the one the retrieval module gives on the same subsample.
    task = subsample(load_task(eval_data, "faq-qa"), True)
    direct = retrieval.evaluate_retrieval(task, GritEmbedder(tiny_llama, max_length=256))
    assert faq["model"]["ndcg@10"] == pytest.approx(direct["ndcg@10"])
    assert results["tasks"]["heldout-perplexity"]["uniform"]["perplexity"] == len(tiny_llama.tokenizer)
    written = write_report(results, tmp_path / "results.json")
    assert json.loads((tmp_path / "results.json").read_text())["tasks"]["faq-qa"]["bm25"] == faq["bm25"]
    assert "| faq-qa | ndcg@10 |" in (tmp_path / "results.md").read_text()
    assert {p.name for p in written} >= {"results-embedding.png", "results-generation.png"}


def test_mteb_adapter_gives_our_scores(tiny_llama):
    from gritkit.evaluate.embedders import GritEmbedder
    from gritkit.evaluate.mteb_adapter import evaluate_with_mteb

    task = {"instruction": "Given a question, retrieve the answer",
            "queries": {f"q{i}": f"question number {i} about topic {i % 3}" for i in range(6)},
            "corpus": {f"d{i}": f"answer {i}: the topic is {i % 3} and more words {i}" for i in range(12)},
            "qrels": {f"q{i}": {f"d{i}": 1} for i in range(6)}}
    ours = retrieval.evaluate_retrieval(task, GritEmbedder(tiny_llama))
    theirs = evaluate_with_mteb(tiny_llama, task)
    for metric in ours:
        assert theirs[metric] == pytest.approx(ours[metric], abs=1e-4)


def test_cli_bad_input_gives_one_line_and_nonzero_exit(tiny_llama_dir, eval_data, tmp_path, capsys):
    from gritkit.cli import main

    assert main(["eval", "--model", str(tiny_llama_dir), "--tasks", "no-such-task"]) == 2
    assert "unknown task 'no-such-task'" in capsys.readouterr().err
    not_model = tmp_path / "not-a-model"
    not_model.mkdir()
    (not_model / "config.json").write_text("{}")
    assert main(["eval", "--model", str(not_model), "--data", str(eval_data)]) == 2
    err = capsys.readouterr().err
    assert "not a loadable GRIT/Hugging Face causal LM" in err and len(err.strip().splitlines()) == 1
    broken = tmp_path / "broken-data"
    import shutil

    shutil.copytree(eval_data, broken)
    (broken / "eval" / "faq-qa.json").write_text('{"kind": "retrieval", "queries": {')
    assert main(["eval", "--model", str(tiny_llama_dir), "--data", str(broken), "--tasks", "faq-qa", "--quick"]) == 2
    assert "faq-qa.json: corrupted data file" in capsys.readouterr().err


def test_bm25_runs_say_nothing_below_warnings():
    """bm25s sets its own logger to DEBUG, which printed "DEBUG:bm25s:Building index..." in the
    middle of the quickstart's output wherever the root logger had a handler."""
    import logging

    from gritkit.evaluate.retrieval import bm25_run

    run = bm25_run({"q": "list files"}, {"a": "ls lists the files", "b": "cat prints a file"}, k=1)
    assert list(run["q"]) == ["a"]
    assert not logging.getLogger("bm25s").isEnabledFor(logging.INFO)
