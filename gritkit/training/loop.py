"""GRIT training: one model, a contrastive loss on embedding data and a next-token loss on chats.

One machine:            gritkit train configs/tiny.yaml max_steps=50 output_dir=runs/tiny
Several GPUs:           torchrun --nproc_per_node 8 -m gritkit.cli train configs/gritlm7b.yaml
From Python:            summary = train(load_config("configs/tiny.yaml", ["max_steps=50"]), callbacks=[...])

The parts, in the order a run uses them: ``batches`` (data checked, each step's share),
``model_setup`` (the model, LoRA, sharding, optimiser groups), ``step`` (the backward passes,
chosen once: ``steps`` padded, ``packed_backward`` packed or single-pass, ``losses``), ``schedule``
(length and learning rate), ``checkpoint`` and ``metrics``.

Each optimiser step draws a global embedding batch (one dataset, ``embedding_batch_size``
queries with ``train_group_size`` documents each) and a global generative batch
(``generative_batch_size`` samples); every process takes its share. The embedding side runs
through GritLM.embed (GradCache in chunks when ``embedding_chunk_size`` is set), the generative
side through the causal LM in micro-batches; gradients of
``lambda_rep * loss_rep + lambda_gen * loss_gen`` are accumulated, synchronised, clipped and
applied with AdamW under a 3% warm-up then linear decay. With ``doc_cache_data`` a third batch
(``doc_cache_batch_size`` samples) adds ``lambda_doc_cache`` x the loss of answers read from a
document's doc cache (``doc_cache.py``). The data position is the step number
(``batches.py``), so a checkpoint holds model, optimiser, scheduler, RNG and step.

Data files are checked line by line before the first step, then read on access through the byte
offsets of their lines (``gritkit/training/jsonl_index.py``); ``output_dir/data_index`` keeps the offsets,
so that a resumed run skips the pass over files that have not changed. Generative examples are
tokenised once before the first step (kept at 5 bytes a token, ``gritkit/training/token_store.py``) and
fitted to ``generative_max_length`` prompt first (``formats.fit_to_length``); how many were
shortened or dropped is logged per file, returned in the summary (``truncation``) and written to
``output_dir/truncation.json``. The CPU thread count is chosen from the free cores unless
``threads`` is set (``gritkit/parallel/threads.py`` says why).

A step whose loss is NaN or infinite stops the run before its optimiser step (``metrics.check_losses``):
nothing is saved after it, so ``final/`` never holds a model known to be broken. A resumed run
starts from the newest complete checkpoint an interrupted save left (``checkpoint.recover_checkpoint``).
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import torch

from ..parallel.distributed import (Processes, all_reduce_sum, average_gradients, clip_grad_norm, replicated,
                                    setup_processes, teardown_processes)
from ..parallel.threads import choose_threads
from .batches import DATA_INDEX, StepDraw, load_data
from .checkpoint import load_checkpoint, recover_checkpoint, save_checkpoint, save_model
from .config import TrainConfig
from .data import tokenize_generative_files
from .doc_cache import tokenize_doc_cache_files
from .metrics import Callback, Metrics, check_losses
from .model_setup import build_model, parameter_groups, prepare_model, use_bf16
from .schedule import StepSchedule
from .step import GritStep
from .backward import StepSettings


def train(config: TrainConfig, callbacks: list[Callback] = (), log=print) -> dict:
    """Train as ``config`` says; returns a summary (steps, last losses, tokens/s, final path,
    threads, truncation per generative file).

    Data are read and checked before anything is written to ``config.output_dir``. ``log``
    receives the run's few lines of text (process 0 only).
    """
    config.check()
    processes = setup_processes()
    threads_before = torch.get_num_threads()
    try:
        return _train(config, processes, list(callbacks), log if processes.is_main else (lambda *_: None))
    finally:
        torch.set_num_threads(threads_before)
        teardown_processes(processes)


def check_sizes(config: TrainConfig, processes: Processes) -> None:
    """Raise ValueError when a global batch does not split evenly over the processes."""
    keys = ["embedding_batch_size", "generative_batch_size"] + (["doc_cache_batch_size"] if config.doc_cache_data else [])
    for key in keys:
        if getattr(config, key) % processes.world_size:
            raise ValueError(f"config: {key}={getattr(config, key)} is not divisible by {processes.world_size} processes")
    if config.lora_r and config.parallel == "fsdp" and processes.distributed:
        raise ValueError("config: LoRA trains few weights; use parallel=ddp with lora_r > 0")


def _train(config: TrainConfig, processes: Processes, callbacks: list[Callback], log) -> dict:
    check_sizes(config, processes)
    output_dir = Path(config.output_dir)
    embedding, generative_files, doc_cache_files = load_data(config, output_dir / DATA_INDEX if config.resume else None)
    checkpoint_dir = output_dir / "checkpoint"
    if not config.resume and ((output_dir / "metrics.jsonl").exists() or checkpoint_dir.exists()):
        raise ValueError(f"{output_dir} already holds a run; set resume=true to continue it or choose another output_dir")
    resume_dir = recover_checkpoint(output_dir, processes, log) if config.resume else None
    threads = _set_threads(config, processes, log)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    grit = build_model(config, embedding, generative_files, resume_dir, processes.device)
    if config.matryoshka_dims and max(config.matryoshka_dims) >= grit.embedding_dim:
        raise ValueError(f"config: matryoshka_dims {config.matryoshka_dims} must be smaller than the model's "
                         f"embedding size {grit.embedding_dim}")
    generative, doc_cache = _tokenize_samples(config, grit, generative_files, doc_cache_files, processes, log)
    draw = StepDraw(config, grit, embedding, generative, doc_cache, processes)
    max_steps = config.max_steps or draw.default_steps()
    sharded = prepare_model(grit, config, processes)
    fsdp = bool(sharded)
    params = [p for p in grit.model.parameters() if p.requires_grad]
    # foreach kernels cannot mix sharded (DTensor) and replicated parameters in one call
    optimizer = torch.optim.AdamW(parameter_groups(grit.model, params, config), lr=config.learning_rate,
                                  betas=(config.adam_beta1, config.adam_beta2), weight_decay=config.weight_decay,
                                  foreach=not fsdp)
    schedule = StepSchedule(max_steps, config.warmup_ratio, config.max_minutes, config.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.factor)
    start, resumed = load_checkpoint(resume_dir, grit, optimizer, scheduler, processes, fsdp) if resume_dir else (0, None)
    spent_s, budget_start = 0.0, start
    if resumed:  # a time-budgeted run continues with what is left of its budget and its fitted total
        schedule.total, spent_s, budget_start = resumed["total"], resumed["elapsed_s"], 0
    metrics = None
    if processes.is_main:
        _write_run_files(config, output_dir, embedding, generative_files + doc_cache_files, generative, doc_cache)
        metrics = Metrics(output_dir, start, config.tensorboard, log)
    settings = StepSettings.from_config(config, processes, use_bf16(config, processes.device), grit.tokenizer.pad_token_id)
    grit_step = GritStep(grit, config, settings, sharded)

    from tqdm.auto import tqdm

    bar = tqdm(total=max_steps, initial=start, desc="train", unit="step",
               disable=not (config.progress_bar and processes.is_main))
    record, rates = {}, []
    clock = time.perf_counter() - spent_s
    step, saved = start, start
    try:
        while step < schedule.total:
            began = time.perf_counter()
            batch = draw(step)
            losses = grit_step.backward(batch)
            check_losses(step + 1, losses, config.learning_rate,
                         f"the checkpoint of step {saved} stays in {checkpoint_dir}" if saved else "no checkpoint saved")
            average_gradients(replicated(params) if fsdp else params, processes)
            if config.max_grad_norm > 0:
                clip_grad_norm(params, config.max_grad_norm)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            tokens = all_reduce_sum(batch.tokens, processes)
            rate = tokens / (time.perf_counter() - began)
            rates.append(rate)
            record = {"step": step + 1, "loss_rep": losses["loss_rep"], "loss_gen": losses["loss_gen"],
                      **({"loss_doc_cache": losses["loss_doc_cache"]} if "loss_doc_cache" in losses else {}),
                      "lr": lr, "tokens": int(tokens), "tokens_per_s": round(rate, 1)}
            if metrics is not None:
                metrics.log(record)
            for callback in callbacks:
                callback.on_step(record)
            bar.update(1)
            bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k.startswith("loss") and v is not None})
            if config.save_every and (step + 1) % config.save_every == 0 and step + 1 < schedule.total:
                save_checkpoint(checkpoint_dir, grit, optimizer, scheduler, step + 1, processes, fsdp,
                                schedule={"total": schedule.total, "elapsed_s": time.perf_counter() - clock})
                saved = step + 1
            step += 1
            if config.max_minutes:
                # averaged over processes so that all of them agree on the total
                elapsed = all_reduce_sum(time.perf_counter() - clock, processes) / processes.world_size
                bar.total = schedule.refit(step, budget_start, elapsed)
        final = output_dir / "final"
        save_model(grit, final, processes, fsdp)
    finally:
        bar.close()
        if metrics is not None:
            metrics.close()
    return {"steps": step, "loss_rep": record.get("loss_rep"), "loss_gen": record.get("loss_gen"),
            "tokens_per_s": sorted(rates)[len(rates) // 2] if rates else None, "final": str(final),
            "output_dir": str(output_dir), "threads": threads,
            "truncation": generative.counts if generative else {}}


def _set_threads(config: TrainConfig, processes: Processes, log) -> int:
    """The CPU thread count of this process (``parallel.threads``), set; the current count on a GPU."""
    if processes.device.type != "cpu":
        return torch.get_num_threads()
    threads = choose_threads(config.threads, int(os.environ.get("LOCAL_WORLD_SIZE", processes.world_size)))
    torch.set_num_threads(threads)
    log(f"train: {threads} CPU thread(s) per process"
        + ("" if config.threads else f" (free cores of {os.cpu_count()}; set threads=N to choose)"))
    return threads


def _tokenize_samples(config: TrainConfig, grit, generative_files: list, doc_cache_files: list, processes: Processes,
                      log):
    """The chats and doc-cache samples tokenised and fitted to length (None for a stream the run has
    not), with what was shortened or dropped logged."""
    progress = config.progress_bar and processes.is_main
    generative = doc_cache = None
    if generative_files:
        generative = tokenize_generative_files(grit.tokenizer, generative_files, config.generative_max_length,
                                               progress=progress)
        for line in generative.describe(config.generative_max_length):
            log(f"train: {line}")
        if not generative.items:
            raise ValueError(f"config: every generative example was dropped at generative_max_length="
                             f"{config.generative_max_length}: none keeps half of its answer; raise it")
    if doc_cache_files:
        doc_cache = tokenize_doc_cache_files(grit, doc_cache_files, config.doc_cache_max_length,
                                             config.generative_max_length, progress=progress)
        for line in doc_cache.describe():
            log(f"train: {line}")
        if not doc_cache.items:
            raise ValueError("config: every doc cache sample was dropped at generative_max_length="
                             f"{config.generative_max_length}; raise it")
    return generative, doc_cache


def _write_run_files(config: TrainConfig, output_dir: Path, embedding: list, files: list, generative, doc_cache) -> None:
    """config.json, the data files' line indexes (for resuming) and truncation.json."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    for dataset in [*embedding, *(examples for _, examples in files)]:
        dataset.save_index(output_dir / DATA_INDEX)
    if generative is not None:
        (output_dir / "truncation.json").write_text(json.dumps(
            {"generative_max_length": config.generative_max_length, "files": generative.counts,
             **({"doc_cache_files": doc_cache.counts} if doc_cache else {})}, indent=2) + "\n")
