"""The shipped models give the vectors and greedy tokens saved in reference_vectors.npz.

The file was written by ``reference_vectors.py`` before the package was rearranged (gritkit-smol's
entries again when its third phase was shipped); a move or a refactor that changes what a shipped
model computes fails here.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.weights.reference_vectors import SAVED, compute


@pytest.mark.parametrize("name", ["gritkit-tiny", "gritkit-smol"])
def test_shipped_model_gives_the_saved_vectors_and_tokens(name):
    if name == "gritkit-smol":
        from gritkit.weights.bases import BaseNotInstalled, find_base_gguf

        try:
            find_base_gguf("smollm2-135m-instruct")
        except BaseNotInstalled as missing:
            pytest.skip(str(missing))
    saved = np.load(SAVED)
    now = compute(name)
    for key, value in now.items():
        if key.endswith("answer"):
            assert value.tolist() == saved[key].tolist(), key
        else:
            np.testing.assert_allclose(value, saved[key], atol=1e-5, err_msg=key)
