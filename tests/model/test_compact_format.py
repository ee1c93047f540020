"""The compact format: markers become single special tokens, and what is pooled and trained keeps its meaning."""

from __future__ import annotations

import pytest
import torch

from gritkit.model.compact_format import add_marker_tokens, format_markers, marker_pieces
from gritkit.training.data import GenerativeExample, tokenize_generative
from gritkit.model.gritlm import GritLM
from gritkit.model.tiny import build_tiny_model

MARKERS = ["<|user|>", "<|embed|>", "<|assistant|>"]
TEXTS = ["The capital of France is Paris.", "packing rows", "x"]
CHAT = GenerativeExample(messages=({"role": "user", "content": "Summarise this.\n\nA long text about tokens."},
                                   {"role": "assistant", "content": "Tokens, briefly."}))


@pytest.fixture(scope="module")
def plain_tokenizer(corpus):
    """A byte-level BPE trained like a pretrained model's: it has never seen the GRIT markers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                  show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def _plain_model(tokenizer):
    import copy

    return build_tiny_model("llama", copy.deepcopy(tokenizer), hidden_size=64, num_layers=2,
                            initializer_range=0.2, tie_word_embeddings=False)


def _decoded(tokenizer, ids, flags):
    return tokenizer.decode([i for i, f in zip(ids, flags) if f])


def test_markers_become_single_tokens_initialised_from_their_pieces(plain_tokenizer):
    grit = _plain_model(plain_tokenizer)
    assert format_markers(grit.config, grit.tokenizer) == ["<|user|>", "<|embed|>", "<|assistant|>"]
    pieces = marker_pieces(grit.tokenizer, MARKERS)
    assert sorted(pieces) == sorted(MARKERS) and all(len(p) > 1 for p in pieces.values())
    inputs = grit.model.get_input_embeddings().weight.detach().clone()
    outputs = grit.model.get_output_embeddings().weight.detach().clone()
    compact = add_marker_tokens(grit)
    assert compact.config.special_markers == tuple(pieces)
    for marker, ids in pieces.items():
        new = compact.tokenizer(marker, add_special_tokens=False)["input_ids"]
        assert len(new) == 1
        assert torch.allclose(compact.model.get_input_embeddings().weight[new[0]], inputs[ids].mean(0))
        assert torch.allclose(compact.model.get_output_embeddings().weight[new[0]], outputs[ids].mean(0))
    assert torch.equal(compact.model.get_input_embeddings().weight[: inputs.shape[0]], inputs)  # old rows untouched
    assert add_marker_tokens(compact) is compact  # nothing left to add


def test_pooled_and_trained_tokens_mean_the_same_text(plain_tokenizer):
    grit = _plain_model(plain_tokenizer)
    before = grit.tokenize_for_embedding(TEXTS, ["Retrieve the passage"] * len(TEXTS))
    chat_before = tokenize_generative(grit.tokenizer, CHAT, 512)
    compact = add_marker_tokens(grit)
    after = compact.tokenize_for_embedding(TEXTS, ["Retrieve the passage"] * len(TEXTS))
    chat_after = tokenize_generative(compact.tokenizer, CHAT, 512)
    saved = sum(len(marker_pieces(plain_tokenizer, [m])[m]) - 1 for m in ("<|user|>", "<|embed|>"))
    for (ids_a, mask_a), (ids_b, mask_b) in zip(before, after):
        assert _decoded(grit.tokenizer, ids_a, mask_a) == _decoded(compact.tokenizer, ids_b, mask_b)
        assert len(ids_a) - len(ids_b) == saved
    assert _decoded(grit.tokenizer, *chat_before[:2]) == _decoded(compact.tokenizer, *chat_after[:2]) \
        == "Tokens, briefly.</s>"
    assert len(chat_after[0]) < len(chat_before[0])


def test_compact_model_saves_and_loads_whole(plain_tokenizer, tmp_path):
    compact = add_marker_tokens(_plain_model(plain_tokenizer))
    vectors = compact.encode(TEXTS, instruction="Retrieve the passage")
    compact.save_pretrained(tmp_path / "m")
    loaded = GritLM.from_pretrained(tmp_path / "m", dtype=torch.float32, device="cpu")
    assert loaded.config == compact.config and loaded.config.special_markers
    assert all(len(loaded.tokenizer(m, add_special_tokens=False)["input_ids"]) == 1 for m in MARKERS)
    assert torch.allclose(torch.from_numpy(loaded.encode(TEXTS, instruction="Retrieve the passage")),
                          torch.from_numpy(vectors), atol=1e-5)


def test_a_tokenizer_that_splits_a_listed_marker_is_refused(plain_tokenizer, tmp_path):
    compact = add_marker_tokens(_plain_model(plain_tokenizer))
    with pytest.raises(ValueError, match="lists .*<\\|embed\\|>.* as single special tokens, but its tokenizer splits"):
        GritLM(compact.model, plain_tokenizer, compact.config, check_bidirectional=False)


def test_training_with_compact_format_saves_it_in_final_and_checkpoint(plain_tokenizer, tmp_path):
    from tests.training.test_train import read_metrics, tiny_config

    from gritkit.training.loop import train

    _plain_model(plain_tokenizer).save_pretrained(tmp_path / "base")
    out = tmp_path / "run"
    train(tiny_config(out, f"model={tmp_path / 'base'}", "compact_format=true", "max_steps=2", "save_every=1"))
    assert len(read_metrics(out)) == 2
    for directory in (out / "final", out / "checkpoint"):
        loaded = GritLM.from_pretrained(directory, dtype=torch.float32, device="cpu")
        assert set(loaded.config.special_markers) == set(MARKERS)
        assert all(len(loaded.tokenizer(m, add_special_tokens=False)["input_ids"]) == 1 for m in MARKERS)
