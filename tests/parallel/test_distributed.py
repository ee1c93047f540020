"""Two processes (torchrun, gloo, CPU) give the gradient of one process running the global batch.

The same file is the torchrun worker: ``torchrun --nproc_per_node 2 tests/parallel/test_distributed.py OUT``
computes one GRIT step's gradients with cross-device negatives, GradCache, accumulation and
both parallel modes (replicated with averaged gradients, and FSDP2), and rank 0 saves them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

QUERIES = ["sort a list in place", "join two paths", "parse a json string", "open a network socket"]
CHATS = [[{"role": "user", "content": f"What does {name} do?"}, {"role": "assistant", "content": answer}]
         for name, answer in [("len", "Return the number of items."), ("abs", "Return the absolute value."),
                              ("sorted", "Return a new sorted list from the items in the iterable."),
                              ("zip", "Iterate over several iterables in parallel.")]]


def step_gradients(processes, parallel: str) -> dict:
    """Gradients of lambda-weighted contrastive + LM loss on the global batch, this process's share."""
    from gritkit.training.data import GenerativeExample, local_slice, tokenize_generative
    from gritkit.parallel.distributed import average_gradients, replicated, shard_model
    from gritkit.model.tiny import build_tiny_model, sample_corpus, train_tokenizer
    from gritkit.training.backward import StepSettings, embedding_backward, generative_backward

    tokenizer = train_tokenizer(sample_corpus()[:1500], vocab_size=600)
    grit = build_tiny_model("llama", tokenizer, hidden_size=32, num_layers=2, initializer_range=0.2)
    grit.model.train()
    sync = lambda last: None  # noqa: E731
    if parallel == "fsdp" and processes.distributed:
        layers = shard_model(grit.model, processes)
        sync = lambda last: [layer.set_requires_gradient_sync(last) for layer in layers]  # noqa: E731
    queries = local_slice(QUERIES, processes.rank, processes.world_size)
    docs = local_slice([(f"{q} positive", f"unrelated text {i}") for i, q in enumerate(QUERIES)],
                       processes.rank, processes.world_size)
    q_items = grit.tokenize_for_embedding(queries, ["Retrieve the function"] * len(queries), 32)
    d_items = grit.tokenize_for_embedding([t for pair in docs for t in pair], [""] * 2 * len(docs), 32)
    settings = StepSettings(processes=processes, pad_id=tokenizer.pad_token_id, temperature=0.05, group_size=2,
                            chunk_size=1, micro_batch_size=1, aggregation="token")
    loss_rep = embedding_backward(grit, q_items, d_items, settings, weight=0.5, before_backward=sync, last=False)
    chats = local_slice(CHATS, processes.rank, processes.world_size)
    items = [tokenize_generative(tokenizer, GenerativeExample(messages=tuple(c)), 64)[:2] for c in chats]
    loss_gen = generative_backward(grit.model, items, settings, weight=2.0, before_backward=sync)
    params = dict(grit.model.named_parameters())
    average_gradients(replicated(params.values()), processes)
    grads = {n: (p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad).detach().clone()
             for n, p in params.items() if p.grad is not None}
    if processes.distributed:
        loss_rep = torch.tensor(loss_rep)
        torch.distributed.all_reduce(loss_rep)
        loss_rep = loss_rep.item() / processes.world_size
    return {"grads": grads, "loss_rep": loss_rep, "loss_gen": loss_gen}


@pytest.mark.slow
def test_two_processes_give_the_global_batch_gradient(tmp_path):
    from gritkit.parallel.distributed import Processes

    out = tmp_path / "grads.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--standalone", __file__, str(out)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    two = torch.load(out)
    one = step_gradients(Processes(), "ddp")
    for parallel in ("ddp", "fsdp"):
        assert two[parallel]["loss_rep"] == pytest.approx(one["loss_rep"], abs=1e-5)
        assert two[parallel]["loss_gen"] == pytest.approx(one["loss_gen"], abs=1e-5)
        assert set(two[parallel]["grads"]) == set(one["grads"])
        for name, grad in one["grads"].items():
            torch.testing.assert_close(two[parallel]["grads"][name], grad, atol=1e-5, rtol=0, msg=f"{parallel} {name}")


if __name__ == "__main__":
    from gritkit.parallel.distributed import setup_processes, teardown_processes

    torch.set_num_threads(1)
    processes = setup_processes()
    results = {parallel: step_gradients(processes, parallel) for parallel in ("ddp", "fsdp")}
    if processes.is_main:
        torch.save(results, Path(sys.argv[1]))
    teardown_processes(processes)
