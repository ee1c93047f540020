"""The trainer's doc-cache stream and its LoRA continuation (``lora_init``), checked against hand computations."""

from __future__ import annotations

import json

import pytest
import torch

from gritkit.model.gritlm import GritLM
from gritkit.training.loop import train
from tests.training.test_doc_cache import EXAMPLES, MULTI_DOCUMENT_EXAMPLES, _inference_loss
from tests.training.test_train import read_metrics, tiny_config


def _write(path, examples):
    """One line per example: one document in the original form, several in the list form."""
    def documents(e):
        return {"document": e.documents[0]} if len(e.documents) == 1 else {"documents": list(e.documents)}

    path.write_text("".join(json.dumps({**documents(e), "messages": [
        {"role": "user", "content": e.user}, {"role": "assistant", "content": e.answer}]}) + "\n" for e in examples))
    return path


@pytest.mark.parametrize("examples, lengths, documents_cut", [
    (EXAMPLES, [], 3),
    # 1, 2 and 3 documents: longer than one document and its turn, so the packed row grows to hold them
    ([EXAMPLES[0], *MULTI_DOCUMENT_EXAMPLES[:2]], [], 6),
])
def test_first_step_doc_cache_loss_is_the_answer_loss_read_from_doc_caches(tiny_llama_dir, tmp_path, examples,
                                                                           lengths, documents_cut):
    data = _write(tmp_path / "doc_cache.jsonl", examples)
    out = tmp_path / "run"
    train(tiny_config(out, f"model={tiny_llama_dir}", f"doc_cache_data=[{data}]", "doc_cache_batch_size=3",
                      "doc_cache_max_length=16", "loss_gen_aggregation=token", "max_steps=1", "save_every=0", *lengths))
    grit = GritLM.from_pretrained(tiny_llama_dir, device="cpu")
    tokenizer = grit.tokenizer
    targets = sum(len(tokenizer(e.answer, add_special_tokens=False)["input_ids"]) + 1 for e in examples)
    expected = sum(_inference_loss(grit, e, 16).item() for e in examples) / targets
    assert read_metrics(out)[0]["loss_doc_cache"] == pytest.approx(expected, rel=1e-4)
    counts = json.loads((out / "truncation.json").read_text())["doc_cache_files"][str(data)]
    assert counts == dict(examples=3, kept=3, documents_cut=documents_cut, answers_cut=0, dropped=0)


def test_lora_init_continues_the_saved_adapter(tiny_llama_dir, tmp_path):
    lora = ["lora_r=4", "lora_alpha=8", "save_every=0", f"model={tiny_llama_dir}"]
    first, second = tmp_path / "first", tmp_path / "second"
    train(tiny_config(first, *lora, "max_steps=2"))
    # A step at learning rate 0 changes nothing: what it saves is the adapter it started from.
    train(tiny_config(second, *lora, f"lora_init={first / 'final' / 'adapter'}", "max_steps=1", "learning_rate=0"))
    before = GritLM.from_pretrained(first / "final", device="cpu").model.state_dict()
    after = GritLM.from_pretrained(second / "final", device="cpu").model.state_dict()
    base = GritLM.from_pretrained(tiny_llama_dir, device="cpu").model.state_dict()
    assert any(not torch.equal(before[n], base[n]) for n in base)  # the first run did change weights
    for name, tensor in before.items():
        torch.testing.assert_close(after[name], tensor, rtol=0, atol=1e-6, msg=name)
    with pytest.raises(ValueError, match="has r=4, the config says 8"):
        train(tiny_config(tmp_path / "third", *lora[1:], "lora_r=8", f"lora_init={first / 'final' / 'adapter'}"))
    with pytest.raises(FileNotFoundError, match="not a LoRA adapter directory"):
        train(tiny_config(tmp_path / "fourth", *lora, f"lora_init={tmp_path}"))


@pytest.mark.parametrize("doc_cache_data, fails", [(["docs.jsonl"], True), ([], False)])
def test_doc_cache_batch_must_split_evenly_over_processes(doc_cache_data, fails):
    from gritkit.training.config import TrainConfig
    from gritkit.parallel.distributed import Processes
    from gritkit.training.loop import check_sizes

    # 8 queries and 8 chats split over 2 processes; 3 doc cache samples do not, and only count when used
    config = TrainConfig(embedding_batch_size=8, generative_batch_size=8, doc_cache_batch_size=3,
                         doc_cache_data=doc_cache_data)
    if fails:
        with pytest.raises(ValueError, match="doc_cache_batch_size=3 is not divisible by 2 processes"):
            check_sizes(config, Processes(rank=0, world_size=2))
    else:
        check_sizes(config, Processes(rank=0, world_size=2))
