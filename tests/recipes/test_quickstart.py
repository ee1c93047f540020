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
