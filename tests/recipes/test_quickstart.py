"""The quickstart's collapse check on training curves written by hand."""

import math

from gritkit.recipes.quickstart import collapse_check


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

    from gritkit.recipes.quickstart import recipe_config

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
