"""A directory written by GritLM.save_pretrained loads in sentence-transformers and gives
GritLM.encode's vectors (queries, documents, every architecture and embedding setting), while
plain transformers still generates from it causally."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sentence_transformers as st
import torch

from gritkit import GritConfig, GritLM
from gritkit.model.tiny import ARCHITECTURES, build_tiny_model


TEXTS = ["a short text", "a somewhat longer text about files and directories and their names",
         "x", "the quick brown fox jumps over the lazy dog " * 3, " leading space and more"]
QUERY_INSTRUCTION = "Given a question, retrieve the answer"


def saved(grit: GritLM, tmp_path, name: str = "m"):
    path = grit.save_pretrained(tmp_path / name)
    return path, GritLM.from_pretrained(path, device="cpu")


def assert_same_vectors(grit: GritLM, model, texts=TEXTS):
    pairs = {"query": (grit.encode_query(texts), model.encode_query(texts)),
             "document": (grit.encode_document(texts), model.encode_document(texts)),
             "plain": (grit.encode(texts), model.encode(texts)),
             "alone": (grit.encode(texts[1]), model.encode(texts[1]))}  # one text: no padding at all
    for name, (ours, theirs) in pairs.items():
        np.testing.assert_allclose(theirs, ours, atol=2e-5, err_msg=name)


def tiny(architecture: str, tokenizer, **settings) -> GritLM:
    config = GritConfig(query_instruction=QUERY_INSTRUCTION, **settings)
    return build_tiny_model(architecture, tokenizer, config=config, hidden_size=64, num_layers=2,
                            initializer_range=0.2)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_sentence_transformers_gives_encode_vectors_on_every_architecture(architecture, tokenizer, tmp_path):
    path, grit = saved(tiny(architecture, tokenizer), tmp_path)
    assert_same_vectors(grit, st.SentenceTransformer(str(path), device="cpu"))


@pytest.mark.parametrize("settings", [
    {"pooling": "last_token"}, {"pooling": "cls"}, {"attention": "causal"}, {"projection": 24},
    {"document_instruction": "Represent the document"},
    {"pooling": "cls", "attention": "causal", "projection": 8, "document_instruction": "Represent it"},
], ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_every_embedding_setting_survives(settings, tokenizer, tmp_path):
    path, grit = saved(tiny("llama", tokenizer, **settings), tmp_path)
    model = st.SentenceTransformer(str(path), device="cpu")
    assert_same_vectors(grit, model)
    assert model.get_embedding_dimension() == grit.embedding_dim


def test_weighted_mean_needs_trust_remote_code_and_then_matches(tokenizer, tmp_path):
    path, grit = saved(tiny("llama", tokenizer, pooling="weighted_mean"), tmp_path)
    with pytest.raises(Exception, match="trust_remote_code"):
        st.SentenceTransformer(str(path), device="cpu")
    assert_same_vectors(grit, st.SentenceTransformer(str(path), device="cpu", trust_remote_code=True))


def test_without_the_files_sentence_transformers_is_silently_wrong(tiny_llama, tmp_path):
    """Why the files exist: the default pipeline (causal, pooled over the prefix too) differs."""
    path = tiny_llama.save_pretrained(tmp_path / "m")
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
        (path / name).unlink()
    plain = st.SentenceTransformer(str(path), device="cpu")
    cosines = (plain.encode(TEXTS, normalize_embeddings=True) * tiny_llama.encode(TEXTS)).sum(1)
    assert cosines.min() < 0.99


def test_causal_lm_load_still_generates_causally(tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM

    path = tiny_llama.save_pretrained(tmp_path / "m")
    assert json.loads((path / "config.json").read_text())["is_causal"] is True
    reloaded = AutoModelForCausalLM.from_pretrained(path).eval()
    ids = torch.tensor([[1, 40, 41, 42, 43, 44]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, tiny_llama.model(input_ids=ids).logits)
    assert GritLM.from_pretrained(path, device="cpu").generate("hello", max_new_tokens=5) == \
        tiny_llama.generate("hello", max_new_tokens=5)


def test_mteb_through_sentence_transformers_gives_the_suites_scores(tokenizer, tmp_path):
    import mteb

    from gritkit.evaluate import retrieval
    from gritkit.evaluate.embedders import GritEmbedder
    from gritkit.evaluate.mteb_adapter import retrieval_task

    task = {"instruction": QUERY_INSTRUCTION,
            "queries": {f"q{i}": f"question number {i} about topic {i % 3}" for i in range(6)},
            "corpus": {f"d{i}": f"answer {i}: the topic is {i % 3} and more words {i}" for i in range(12)},
            "qrels": {f"q{i}": {f"d{i}": 1} for i in range(6)}}
    path, grit = saved(tiny("llama", tokenizer), tmp_path)
    ours = retrieval.evaluate_retrieval(task, GritEmbedder(grit))
    model = st.SentenceTransformer(str(path), device="cpu")
    result = mteb.evaluate(model, retrieval_task(task), cache=None, show_progress_bar=False)
    scores = result.task_results[0].scores["test"][0]
    theirs = {"ndcg@10": scores["ndcg_at_10"], "mrr@10": scores["mrr_at_10"], "recall@100": scores["recall_at_100"]}
    for metric in ours:
        assert theirs[metric] == pytest.approx(ours[metric], abs=1e-4)


def test_shipped_model_loads_in_sentence_transformers(tmp_path):
    """The shipped directory carries the files too; its float16 weights load as float32 when asked."""
    from gritkit.weights.shipped import SHIPPED_DIR

    grit = GritLM.from_pretrained("gritkit-tiny")
    shipped = str(SHIPPED_DIR / "gritkit-tiny")
    assert_same_vectors(grit, st.SentenceTransformer(shipped, device="cpu", model_kwargs={"dtype": torch.float32}))
    half = st.SentenceTransformer(shipped, device="cpu")  # the checkpoint's own float16
    assert (half.encode_query(TEXTS) * grit.encode_query(TEXTS)).sum(1).min() > 0.999
