"""Side-by-side results tables."""

import json

import pytest

from gritkit.recipes.compare_results import comparison_table, load_labelled, main


def _results(tmp_path, name, score, manifest="m1", **baselines):
    entry = {"kind": "retrieval", "model": {"ndcg@10": score}, **{k: {"ndcg@10": v} for k, v in baselines.items()}}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"tasks": {"faq-qa": entry}, "main_metric": {"faq-qa": "ndcg@10"},
                                "data_manifest_sha256": manifest, "quick": True}))
    return f"{name}={path}"


def test_table_has_each_model_then_the_first_results_baselines(tmp_path):
    table = comparison_table(load_labelled([_results(tmp_path, "a", 0.5, bm25=0.8, random=0.01),
                                            _results(tmp_path, "b", 0.25)]))
    assert table.splitlines()[0] == "| task | metric | a | b | lexical | minilm | random |"
    assert table.splitlines()[2] == "| faq-qa | ndcg@10 | 0.500 | 0.250 | 0.800 |  | 0.010 |"


def test_results_from_another_data_build_or_a_bad_argument_are_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="b was not evaluated on the same data build"):
        load_labelled([_results(tmp_path, "a", 0.5), _results(tmp_path, "b", 0.2, manifest="m2")])
    assert main(["no-label.json"]) == 2
    assert "expected LABEL=results.json" in capsys.readouterr().err
