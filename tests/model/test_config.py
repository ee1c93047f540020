"""GritConfig: validated, saved whole and loaded whole, for every combination of its settings."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from gritkit import GritConfig, GritFormat, GritLM
from gritkit.model.config import CONFIG_NAME
from gritkit.model.pooling import POOLING_METHODS

SETTINGS = [GritConfig(pooling=p, attention=a, projection=n, query_instruction=q)
            for (p, a), (n, q) in zip(itertools.product(POOLING_METHODS, ("bidirectional", "causal")),
                                      itertools.cycle([(None, ""), (8, "Find the passage"), (None, "Q"), (12, "")]))]
SETTINGS.append(GritConfig(format=GritFormat("<|user|>\n{instruction}\n<|embed|>", "<|embed|>"),
                           document_instruction="Represent the document"))


@pytest.mark.parametrize("config", SETTINGS, ids=lambda c: f"{c.pooling}-{c.attention}-{c.projection}")
def test_every_setting_survives_save_pretrained_and_from_pretrained(config, tiny_llama, tmp_path):
    model = GritLM(tiny_llama.model, tiny_llama.tokenizer, config, check_bidirectional=False)
    model.save_pretrained(tmp_path / "m")
    assert GritConfig.from_dict(json.loads((tmp_path / "m" / CONFIG_NAME).read_text())) == config
    loaded = GritLM.from_pretrained(tmp_path / "m", device="cpu")
    assert loaded.config == config
    texts = ["sort a list in place", "the files of a directory"]
    np.testing.assert_array_equal(loaded.encode_query(texts), model.encode_query(texts))
    np.testing.assert_array_equal(loaded.encode_document(texts), model.encode_document(texts))


def test_overrides_replace_saved_fields_and_keep_the_others(tiny_llama, tmp_path):
    saved = GritConfig(pooling="weighted_mean", attention="causal", query_instruction="Q")
    GritLM(tiny_llama.model, tiny_llama.tokenizer, saved, check_bidirectional=False).save_pretrained(tmp_path / "m")
    loaded = GritLM.from_pretrained(tmp_path / "m", device="cpu", pooling="cls")
    assert loaded.config == saved.replace(pooling="cls")
    given = GritLM.from_pretrained(tmp_path / "m", device="cpu", config=GritConfig(), projection=4)
    assert given.config == GritConfig(projection=4) and given.embedding_dim == 4
    with pytest.raises(ValueError, match="projection head to 4 dims"):
        given.save_pretrained(tmp_path / "p")
        GritLM.from_pretrained(tmp_path / "p", device="cpu", projection=5)


def test_older_files_take_defaults_for_fields_they_lack(tmp_path):
    (tmp_path / CONFIG_NAME).write_text(json.dumps({"pooling": "cls", "attention": "causal", "projection": None}))
    assert GritConfig.load(tmp_path) == GritConfig(pooling="cls", attention="causal")
    assert GritConfig.load(tmp_path / "plain-hf-checkpoint") == GritConfig()


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"pooling": "mean", "atention": "causal"}), "unknown key.*atention"),
    (json.dumps({"pooling": "max"}), "pooling must be one of"),
    (json.dumps({"projection": 0}), "projection must be a positive"),
    (json.dumps({"format": {"embed_with": "x"}}), "gritkit_config.json"),
])
def test_malformed_files_name_the_file_and_the_problem(tmp_path, content, message):
    (tmp_path / CONFIG_NAME).write_text(content)
    with pytest.raises(ValueError, match=message) as error:
        GritConfig.load(tmp_path)
    assert str(tmp_path / CONFIG_NAME) in str(error.value)


def test_config_is_frozen_and_checked():
    config = GritConfig()
    with pytest.raises(AttributeError):
        config.pooling = "cls"
    with pytest.raises(TypeError, match="query_instruction must be a str"):
        GritConfig(query_instruction=None)
    with pytest.raises(ValueError, match="projection"):
        GritConfig(projection=True)
