"""GritLM on every architecture of the matrix: bidirectional embedding, causal generation,
padding invariance, instruction exclusion, pooling, save/load and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gritkit import BidirectionalAttentionError, GritConfig, GritLM
from gritkit.model.tiny import ARCHITECTURES, build_tiny_model

TEXTS = ["a short text", "a somewhat longer text about files and directories and their names",
         "x", "the quick brown fox jumps over the lazy dog " * 3]


@pytest.fixture(scope="module", params=ARCHITECTURES)
def grit(request, tokenizer):
    return build_tiny_model(request.param, tokenizer, hidden_size=64, num_layers=2, initializer_range=0.2)


def hand_embedding(grit: GritLM, prompt: str, text_positions: slice, causal: bool = False) -> torch.Tensor:
    """Run the HF decoder directly and mean-pool the given positions: the reference computation."""
    ids = grit.tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = grit.model.base_model(input_ids=ids, is_causal=causal).last_hidden_state[0]
    return torch.nn.functional.normalize(hidden[text_positions].float().mean(0), dim=-1)


def text_start(grit: GritLM, prompt: str) -> int:
    """Index of the first text token: two past the <|embed|> marker (which is followed by "\n")."""
    ids = grit.tokenizer(prompt).input_ids
    return ids.index(grit.tokenizer.convert_tokens_to_ids("<|embed|>")) + 2


def test_embedding_is_bidirectional(grit, tokenizer):
    first = grit.with_config(pooling="cls")
    a, b = "the files are listed here", "the files are listed there"
    assert not np.allclose(grit.encode(a), grit.encode(b), atol=1e-4)
    # The first text token's state changes when only the last token changes: it sees the future.
    assert not np.allclose(first.encode(a), first.encode(b), atol=1e-4)


def test_generation_stays_causal_after_encode(grit):
    grit.encode(TEXTS)  # a bidirectional call must not leak into the next causal one
    ids = torch.tensor([[1, 40, 41, 42, 43, 44]])
    changed = ids.clone()
    changed[0, -1] = 45
    with torch.no_grad():
        logits = grit.model(input_ids=ids).logits
        logits_changed = grit.model(input_ids=changed).logits
    torch.testing.assert_close(logits[0, :-1], logits_changed[0, :-1])


def test_matches_hand_computation_with_and_without_instruction(grit):
    for instruction in ("", "Retrieve the passage"):
        prompt, _ = grit.format.embedding_prompt("hello world of files", instruction)
        expected = hand_embedding(grit, prompt, slice(text_start(grit, prompt), None))
        got = grit.encode("hello world of files", instruction=instruction)
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)


def test_padding_and_batching_invariance_and_order(grit):
    alone = np.stack([grit.encode(t, instruction="Find it") for t in TEXTS])
    batched = grit.encode(TEXTS, instruction="Find it", batch_size=3)
    cosines = (alone * batched).sum(1)
    assert cosines.min() > 0.99999


def test_a_batch_token_cap_changes_the_batches_not_the_vectors(grit, monkeypatch):
    from gritkit.model import gritlm as model_module

    texts = [" ".join(["word"] * n) for n in (1, 40, 3, 25, 2, 60, 8)]
    seen = []
    embed = grit.embed
    monkeypatch.setattr(grit, "embed", lambda batch: seen.append(batch.input_ids.shape) or embed(batch))
    uncapped = grit.encode(texts, batch_size=4, max_batch_tokens=0)
    assert [rows for rows, _ in seen] == [4, 3]
    seen.clear()
    capped = grit.encode(texts, batch_size=4, max_batch_tokens=120)
    assert all(rows == 1 or rows * width <= 120 for rows, width in seen) and len(seen) > 2
    assert sum(rows for rows, _ in seen) == len(texts)
    np.testing.assert_allclose(capped, uncapped, atol=1e-6)
    seen.clear()
    grit.encode(texts, batch_size=4)  # a CPU model: the default cap applies
    lengths = [len(ids) for ids, _ in grit.tokenize_for_embedding(texts, [""] * len(texts), grit.max_seq_length)]
    expected = model_module.length_batches(lengths, 4, model_module.CPU_BATCH_TOKENS)
    assert [rows for rows, _ in seen] == [len(b) for b in expected]
    with pytest.raises(ValueError, match="max_batch_tokens"):
        grit.encode(texts, max_batch_tokens=-1)


def test_length_batches_sorts_longest_first_and_respects_both_caps():
    from gritkit.model.gritlm import length_batches

    lengths = [5, 50, 7, 30, 30, 2, 90]
    assert length_batches(lengths, 3) == [[6, 1, 3], [4, 2, 0], [5]]
    assert length_batches(lengths, 3, max_tokens=100) == [[6], [1, 3], [4, 2, 0], [5]]
    assert length_batches(lengths, 10, max_tokens=60) == [[6], [1], [3, 4], [2, 0, 5]]
    assert length_batches([], 4, 10) == []


def test_pooling_modes_match_hand_computation(tiny_llama, tokenizer):
    prompt, _ = tiny_llama.format.embedding_prompt("pooled words only", "Instr")
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = tiny_llama.model.base_model(input_ids=ids, is_causal=False).last_hidden_state[0].float()
    text = hidden[text_start(tiny_llama, prompt):]
    weights = torch.arange(1, len(text) + 1, dtype=torch.float32)[:, None]
    expected = {"mean": text.mean(0), "weighted_mean": (text * weights).sum(0) / weights.sum(),
                "last_token": text[-1], "cls": text[0]}
    for method, vector in expected.items():
        model = tiny_llama.with_config(pooling=method)
        got = model.encode("pooled words only", instruction="Instr", normalize_embeddings=False)
        np.testing.assert_allclose(got, vector.numpy(), atol=1e-5, err_msg=method)


def test_save_load_round_trip_with_projection(tiny_llama, tokenizer, tmp_path):
    torch.manual_seed(1)
    config = GritConfig(pooling="weighted_mean", projection=16, query_instruction="Find the file",
                        document_instruction="A file")
    model = GritLM(tiny_llama.model, tokenizer, config, projection_head=torch.nn.Linear(64, 16),
                   check_bidirectional=False)
    model.save_pretrained(tmp_path / "m")
    loaded = GritLM.from_pretrained(tmp_path / "m", device="cpu")
    assert loaded.config == config and loaded.embedding_dim == 16
    torch.testing.assert_close(loaded.projection_head.weight, model.projection_head.weight)
    assert (tmp_path / "m" / "model.safetensors").is_file()
    np.testing.assert_array_equal(loaded.encode(TEXTS, instruction="q"), model.encode(TEXTS, instruction="q"))
    # Saving again over an existing directory replaces it whole.
    loaded.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_plain_hf_checkpoint_loads_with_grit_defaults(tiny_llama, tokenizer, tmp_path):
    tiny_llama.model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = GritLM.from_pretrained(tmp_path, device="cpu")
    assert loaded.config == GritConfig() and loaded.projection_head is None
    np.testing.assert_allclose(loaded.encode(TEXTS), tiny_llama.encode(TEXTS), atol=1e-6)


def test_generate_equals_transformers_greedy_on_the_grit_format(tiny_llama, tokenizer):
    ids = tokenizer("<s><|user|>\nSay hi\n<|assistant|>\n", add_special_tokens=False, return_tensors="pt").input_ids
    assert tiny_llama.chat_input_ids("Say hi") == ids[0].tolist()
    with torch.no_grad():
        out = tiny_llama.model.generate(input_ids=ids, max_new_tokens=8, do_sample=False)
    assert tiny_llama.generate("Say hi", max_new_tokens=8) == tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_batched_generation_equals_single(tiny_llama):
    prompts = ["Say hi", "Describe a long and winding road in detail"]
    singles = [tiny_llama.generate(p, max_new_tokens=8) for p in prompts]
    assert tiny_llama.generate(prompts, max_new_tokens=8) == singles
    assert tiny_llama.chat([{"role": "user", "content": "Say hi"}], max_new_tokens=8) == singles[0]


def test_bad_input(tiny_llama):
    assert tiny_llama.encode([]).shape == (0, 64)
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        tiny_llama.encode(["fine", 3])
    with pytest.raises(TypeError, match="must be a str or a list"):
        tiny_llama.encode(None)


def test_empty_string_pools_over_the_format_tokens(tiny_llama, tokenizer):
    prompt, _ = tiny_llama.format.embedding_prompt("", "Instr")
    expected = hand_embedding(tiny_llama, prompt, slice(0, None))
    np.testing.assert_allclose(tiny_llama.encode("", instruction="Instr"), expected.numpy(), atol=1e-5)


def test_overlong_text_is_truncated_and_keeps_the_instruction(tiny_llama, tokenizer):
    text = "words " * 200
    prompt, _ = tiny_llama.format.embedding_prompt(text, "Keep me")
    ids = tokenizer(prompt).input_ids[:24]
    start = text_start(tiny_llama, prompt)
    with torch.no_grad():
        hidden = tiny_llama.model.base_model(input_ids=torch.tensor([ids]), is_causal=False).last_hidden_state[0]
    expected = torch.nn.functional.normalize(hidden[start:].mean(0), dim=-1)
    np.testing.assert_allclose(tiny_llama.encode(text, instruction="Keep me", max_length=24), expected.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="leave no room for the text"):
        tiny_llama.encode(text, instruction="a long instruction " * 10, max_length=8)


def test_error_when_attention_cannot_be_bidirectional(tokenizer, monkeypatch):
    broken = build_tiny_model("llama", tokenizer, hidden_size=32, num_layers=1)
    decoder = broken.model.base_model
    original = decoder.forward

    def ignores_is_causal(*args, is_causal=None, **kwargs):  # what an old transformers does
        return original(*args, **kwargs)

    monkeypatch.setattr(decoder, "forward", ignores_is_causal)
    with pytest.raises(BidirectionalAttentionError, match="bidirectional"):
        GritLM(broken.model, tokenizer)

    def rejects_is_causal(input_ids=None, attention_mask=None, use_cache=None):
        return original(input_ids=input_ids, attention_mask=attention_mask)

    monkeypatch.setattr(decoder, "forward", rejects_is_causal)
    with pytest.raises(BidirectionalAttentionError):
        GritLM(broken.model, tokenizer)


def test_loading_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        GritLM.from_pretrained(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a Hugging Face model directory"):
        GritLM.from_pretrained(tmp_path)


def test_mistral_sliding_window_is_bidirectional_within_the_window_and_padding_invariant(tokenizer):
    grit = build_tiny_model("mistral", tokenizer, hidden_size=64, num_layers=2, initializer_range=0.2,
                            sliding_window=4)
    texts = ["one two three four five six seven eight nine ten", "short", "a b c d e f g h i j k l m n"]
    alone = np.stack([grit.encode(t) for t in texts])
    assert (alone * grit.encode(texts)).sum(1).min() > 0.99999
    ids = torch.tensor([[1, *range(40, 52)]])
    changed = ids.clone()
    changed[0, -1] = 60
    with torch.no_grad():
        states = [grit.model.base_model(input_ids=x, is_causal=False).last_hidden_state[0] for x in (ids, changed)]
    assert (states[0][-3] - states[1][-3]).abs().max() > 1e-3  # a later token inside the window is seen


def test_zero_initialised_attention_output_is_not_mistaken_for_causal(tokenizer):
    grit = build_tiny_model("llama", tokenizer, hidden_size=32, num_layers=1)
    with torch.no_grad():
        for name, parameter in grit.model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                parameter.zero_()
    before = {n: p.clone() for n, p in grit.model.named_parameters()}
    GritLM(grit.model, tokenizer)  # bidirectional: the probe fills the zero tensors with noise for one pass
    for name, parameter in grit.model.named_parameters():  # ... and zeroes them again: the weights are unchanged
        torch.testing.assert_close(parameter, before[name], atol=0, rtol=0, msg=name)


def test_causal_last_token_embeddings_match_hand_computation_and_survive_saving(tiny_llama, tokenizer, tmp_path):
    """The ablation's variant: causal attention + last-token pooling, kept across save/load."""
    model = GritLM(tiny_llama.model, tokenizer, GritConfig(pooling="last_token", attention="causal"))
    prompt, _ = model.format.embedding_prompt("sort a list in place", "")
    last = len(tokenizer(prompt).input_ids) - 1
    hand = hand_embedding(model, prompt, slice(last, last + 1), causal=True)
    assert torch.allclose(torch.from_numpy(model.encode("sort a list in place")), hand, atol=1e-5)
    bidirectional = hand_embedding(model, prompt, slice(last, last + 1), causal=False)
    assert not torch.allclose(hand, bidirectional, atol=1e-3)
    model.save_pretrained(tmp_path / "m")
    loaded = GritLM.from_pretrained(tmp_path / "m", device="cpu")
    assert loaded.config == model.config
    np.testing.assert_array_equal(loaded.encode("sort a list in place"), model.encode("sort a list in place"))
    with pytest.raises(ValueError, match="attention must be one of"):
        GritConfig(attention="sideways")


def test_probe_of_a_zero_initialised_model_makes_no_copy(tokenizer, monkeypatch):
    import copy

    grit = build_tiny_model("llama", tokenizer, hidden_size=32, num_layers=1, zero_residual=True)

    def no_copies(*args, **kwargs):
        raise AssertionError("the bidirectional probe copied the model")

    monkeypatch.setattr(copy, "deepcopy", no_copies)
    GritLM(grit.model, tokenizer)


def test_encode_query_uses_the_saved_query_instruction(tiny_llama, tmp_path):
    model = tiny_llama.with_config(query_instruction="Find the manual page", document_instruction="")
    model.save_pretrained(tmp_path / "m")
    loaded = GritLM.from_pretrained(tmp_path / "m", device="cpu")
    query = "how do I list files"
    with_saved = loaded.encode_query(query)
    np.testing.assert_allclose(with_saved, loaded.encode(query, instruction="Find the manual page"), atol=1e-6)
    assert not np.allclose(with_saved, loaded.encode(query), atol=1e-4)  # not silently a document encoding
    np.testing.assert_allclose(loaded.encode_query(query, instruction="Other task"),
                               loaded.encode(query, instruction="Other task"), atol=1e-6)
    np.testing.assert_allclose(loaded.encode_document(query), loaded.encode(query), atol=1e-6)
    labelled = tiny_llama.with_config(document_instruction="A manual page")
    np.testing.assert_allclose(labelled.encode_document(query), tiny_llama.encode(query, instruction="A manual page"),
                               atol=1e-6)


def test_similarity_is_the_cosine_matrix(tiny_llama):
    a = tiny_llama.encode(TEXTS[:3], normalize_embeddings=False)
    b = tiny_llama.encode(TEXTS[1:], normalize_embeddings=False)
    expected = np.array([[x @ y / np.linalg.norm(x) / np.linalg.norm(y) for y in b] for x in a])
    got = GritLM.similarity(a, b)
    assert isinstance(got, np.ndarray) and got.shape == (3, 3)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    as_tensor = tiny_llama.similarity(torch.from_numpy(a[0]), b)
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.shape == (1, 3)
    np.testing.assert_allclose(as_tensor.numpy(), expected[:1], atol=1e-5)
    with pytest.raises(ValueError, match="dimension"):
        GritLM.similarity(a, a[:, :5])


def test_dimension_and_max_seq_length(tiny_llama):
    assert tiny_llama.embedding_dim == tiny_llama.get_sentence_embedding_dimension() == 64
    text = "words " * 200
    short = tiny_llama.with_config()
    short.max_seq_length = 24
    np.testing.assert_allclose(short.encode(text), tiny_llama.encode(text, max_length=24), atol=1e-6)
    assert not np.allclose(short.encode(text), tiny_llama.encode(text), atol=1e-4)


def test_unknown_keywords_name_the_accepted_ones(tiny_llama, tiny_llama_dir):
    with pytest.raises(TypeError, match="normalize.*accepts instruction, batch_size"):
        tiny_llama.encode("x", normalize=False)
    with pytest.raises(TypeError, match="instruction=..."):
        tiny_llama.encode_query("x", prompt="query: ")
    with pytest.raises(TypeError, match="unknown keyword.*poolling.*GRIT settings are pooling"):
        GritLM.from_pretrained(tiny_llama_dir, poolling="cls")
    with pytest.raises(TypeError, match="unknown GritConfig field"):
        tiny_llama.with_config(attn="causal")
    with pytest.raises(ValueError, match="cannot change projection"):
        tiny_llama.with_config(projection=8)


def test_truncate_dim_keeps_the_first_dimensions_then_normalises(tiny_llama):
    texts = ["Return the number of items in a container.", "Open a file"]
    raw = tiny_llama.encode(texts, normalize_embeddings=False)
    cut = tiny_llama.encode(texts, truncate_dim=8)
    assert cut.shape == (2, 8)
    np.testing.assert_allclose(cut, raw[:, :8] / np.linalg.norm(raw[:, :8], axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(tiny_llama.encode(texts, truncate_dim=8, normalize_embeddings=False), raw[:, :8],
                               atol=1e-6)
    for bad in (0, tiny_llama.embedding_dim + 1, 2.5, True):
        with pytest.raises(ValueError, match="truncate_dim must be an int from 1 to"):
            tiny_llama.encode(texts, truncate_dim=bad)
