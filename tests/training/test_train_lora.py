"""LoRA training in the loop: only the adapted projections change, and the checkpoint is merged."""

from __future__ import annotations

import torch

from gritkit.model.gritlm import GritLM
from gritkit.training.loop import train
from tests.training.test_train import tiny_config


def test_lora_run_changes_only_the_adapted_projections(tiny_llama_dir, tmp_path):
    out = tmp_path / "lora"
    train(tiny_config(out, f"model={tiny_llama_dir}", "lora_r=4", "lora_alpha=8", "max_steps=3", "save_every=0",
                      "lora_target_modules=[q_proj,v_proj]"))
    before = GritLM.from_pretrained(tiny_llama_dir, device="cpu").model.state_dict()
    after = GritLM.from_pretrained(out / "final", device="cpu").model.state_dict()
    assert after.keys() == before.keys()  # merged: no adapter weights left
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.endswith(("q_proj.weight", "v_proj.weight")) for name in changed)


def test_lora_run_saves_an_adapter_that_rebuilds_the_merged_model(tiny_llama_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    train(tiny_config(out, f"model={tiny_llama_dir}", "lora_r=4", "lora_alpha=8", "max_steps=3", "save_every=2"))
    for saved in (out / "final", out / "checkpoint"):
        assert (saved / "adapter" / "adapter_config.json").is_file(), saved
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    rebuilt = PeftModel.from_pretrained(base, out / "final" / "adapter").merge_and_unload().state_dict()
    merged = GritLM.from_pretrained(out / "final", device="cpu").model.state_dict()
    assert rebuilt.keys() == merged.keys()
    for name, tensor in merged.items():
        torch.testing.assert_close(rebuilt[name], tensor, rtol=0, atol=1e-6, msg=name)


def test_lora_run_final_and_checkpoint_load_in_sentence_transformers(tiny_llama_dir, tmp_path):
    """The trainer's saves (merged LoRA weights, adapter beside them) carry the same vectors there."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "lora"
    train(tiny_config(out, f"model={tiny_llama_dir}", "lora_r=4", "lora_alpha=8", "max_steps=3", "save_every=2",
                      "pooling=last_token"))
    texts = ["list the files", "copy a directory and keep its permissions"]
    for saved in (out / "final", out / "checkpoint"):
        grit = GritLM.from_pretrained(saved, device="cpu")
        assert grit.pooling == "last_token"
        np.testing.assert_allclose(SentenceTransformer(str(saved), device="cpu").encode_document(texts),
                                   grit.encode_document(texts), atol=2e-5)
