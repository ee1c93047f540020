"""gritkit ablate: the scores it extracts and the table it prints, against hand computations."""

from __future__ import annotations

import json
import math

import pytest

from gritkit.recipes.ablate import ablate, ablation_table, summarize


def fake_run(run_dir, retrieval: float, accuracy: float, perplexity: float, steps: int, loss_gen=None):
    tasks = {
        "debian-search": {"kind": "retrieval", "model": {"ndcg@10": retrieval}},
        "faq-qa": {"kind": "retrieval", "model": {"ndcg@10": retrieval / 2}},
        "debian-section-classification": {"kind": "classification", "model": {"accuracy": accuracy}},
        "debian-section-clustering": {"kind": "clustering", "model": {"v_measure": 0.1}},
        "heldout-perplexity": {"kind": "perplexity", "model": {"perplexity": perplexity}},
        "debian-summary": {"kind": "summary", "model": {"rougeL": 0.2}},
    }
    main = {"debian-search": "ndcg@10", "faq-qa": "ndcg@10", "debian-section-classification": "accuracy",
            "debian-section-clustering": "v_measure", "heldout-perplexity": "perplexity", "debian-summary": "rougeL"}
    (run_dir / "train").mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps({"tasks": tasks, "main_metric": main}))
    records = [{"step": s + 1, "tokens": 100, "loss_rep": None,
                "loss_gen": loss_gen[s] if loss_gen else None} for s in range(steps)]
    (run_dir / "train" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_summary_means_and_spreads_match_hand_computation(tmp_path):
    fake_run(tmp_path / "a0", retrieval=0.4, accuracy=0.6, perplexity=300, steps=10)
    fake_run(tmp_path / "a1", retrieval=0.6, accuracy=0.2, perplexity=500, steps=12)
    # 20 steps: tenths of 2 steps; LM loss 4, 4 in the second-to-last tenth and 3, 3 in the last: -25%
    fake_run(tmp_path / "b0", retrieval=0.2, accuracy=0.2, perplexity=900, steps=20, loss_gen=[9.0] * 16 + [4, 4, 3, 3])
    summary = summarize([("unified", 0, tmp_path / "a0"), ("unified", 1, tmp_path / "a1"),
                         ("embedding", 0, tmp_path / "b0")], minutes=5)
    unified = summary["variants"]["unified"]
    # embedding average of run a0: mean(0.4, 0.2, 0.6, 0.1) = 0.325; of a1: mean(0.6, 0.3, 0.2, 0.1) = 0.3
    assert unified["embedding_average"]["mean"] == pytest.approx(0.3125)
    assert unified["embedding_average"]["sd"] == pytest.approx(math.sqrt(2 * 0.0125 ** 2))
    assert unified["retrieval_ndcg10"]["mean"] == pytest.approx((0.3 + 0.45) / 2)
    assert unified["perplexity"]["mean"] == 400 and unified["perplexity"]["sd"] == pytest.approx(math.sqrt(2e4))
    assert unified["steps"]["mean"] == 11 and unified["tokens"]["mean"] == 1100
    assert summary["variants"]["embedding"]["seeds"] == 1 and summary["variants"]["embedding"]["perplexity"]["sd"] == 0
    table = ablation_table(summary)
    assert summary["variants"]["embedding"]["late_change_gen"] == pytest.approx(-0.25)
    assert unified["late_change_gen"] is None and unified["late_change_rep"] is None
    assert "| unified | 2 | 0.312 ± 0.018 | 0.375 ± 0.106 | 400 ± 141 | 0.200 ± 0.000 | 11 | 0.00M | — / — |" in table
    assert "| 20 | 0.00M | — / -25.0% |" in table
    assert table.index("\n| unified |") < table.index("\n| embedding |")


def test_bad_arguments_fail_before_any_training(tmp_path):
    with pytest.raises(ValueError, match="unknown variant.*sideways"):
        ablate(tmp_path, variants=["unified", "sideways"], data_dir=tmp_path / "nodata")
    with pytest.raises(ValueError, match="minutes > 0"):
        ablate(tmp_path, minutes=0, data_dir=tmp_path / "nodata")
    assert list(tmp_path.iterdir()) == []
