"""GRIT training: one model, a contrastive loss on embedding data and a next-token loss on chats.

One machine:            gritkit train configs/tiny.yaml max_steps=50 output_dir=runs/tiny
Several GPUs:           torchrun --nproc_per_node 8 -m gritkit.cli train configs/gritlm7b.yaml
From Python:            summary = train(load_config("configs/tiny.yaml", ["max_steps=50"]), callbacks=[...])

Each optimiser step draws a global embedding batch (one dataset, ``embedding_batch_size``
queries with ``train_group_size`` documents each) and a global generative batch
(``generative_batch_size`` samples); every process takes its share. The embedding side runs
through GritLM.embed (GradCache in chunks when ``embedding_chunk_size`` is set), the generative
side through the causal LM in micro-batches; gradients of
``lambda_rep * loss_rep + lambda_gen * loss_gen`` are accumulated, synchronised, clipped and
applied with AdamW under a 3% warm-up then linear decay. With ``doc_cache_data`` a third batch
(``doc_cache_batch_size`` samples) adds ``lambda_doc_cache`` x the loss of answers read from a
document's doc cache (``doc_cache_training.py``). The data position is the step number
(see gritkit/training/data.py), so a checkpoint holds model, optimiser, scheduler, RNG and step.

Data files are checked line by line before the first step, then read on access through the byte
offsets of their lines (``gritkit/training/jsonl_index.py``); ``output_dir/data_index`` keeps the offsets,
so that a resumed run skips the pass over files that have not changed. Generative examples are
tokenised once before the first step (kept at 5 bytes a token, ``gritkit/training/token_store.py``) and
fitted to ``generative_max_length`` prompt first (``formats.fit_to_length``); how many were
shortened or dropped is logged per file, returned in the summary (``truncation``) and written to
``output_dir/truncation.json``. The CPU thread count is chosen from the free cores unless
``threads`` is set (``gritkit/parallel/threads.py`` says why).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path

import torch

from .checkpoint import load_checkpoint, save_checkpoint, save_model
from .config import TrainConfig
from .data import StepSampler, embedding_group, local_slice, read_embedding_file, read_generative_file, tokenize_embedding_texts, tokenize_generative_files
from ..parallel.distributed import Processes, all_reduce_sum, average_gradients, clip_grad_norm, replicated, setup_processes, shard_model, teardown_processes
from .doc_cache import read_doc_cache_file, tokenize_doc_cache_files
from ..parallel.threads import choose_threads
from .packed_steps import generative_backward_packed, single_pass_backward
from .steps import embedding_backward, generative_backward


DATA_INDEX = "data_index"  # under output_dir: the line offsets of every data file, for resuming


def load_data(config: TrainConfig, index_dir: Path | None = None) -> tuple[list, list, list]:
    """Check every data file the mode needs: embedding datasets, and (file, examples) pairs of
    generative and of doc-cache data, each read from its file on access
    (``data.read_embedding_file``). Indexes saved in ``index_dir`` spare the pass over files that
    have not changed since."""
    embedding, generative = [], []
    if config.mode != "generative":
        embedding = [read_embedding_file(p, config.train_group_size - 1, index_dir) for p in config.embedding_data]
    if config.mode != "embedding":
        generative = [(p, read_generative_file(p, index_dir)) for p in config.generative_data]
    doc_cache = [(p, read_doc_cache_file(p, index_dir)) for p in config.doc_cache_data]
    return embedding, generative, doc_cache


def _corpus(config: TrainConfig, embedding: list, generative: list):
    """Texts to train a tokenizer on: the named files, or else the training data itself (streamed
    from the files: the tokenizer trainer counts words as they come)."""
    if config.tokenizer_corpus:
        for p in config.tokenizer_corpus:
            yield from Path(p).read_text(encoding="utf-8").splitlines()
        return
    for dataset in embedding:
        for e in dataset:
            yield from (t for _, t in (e.query, *e.pos, *e.neg))
    for _, examples in generative:
        for example in examples:
            yield from [example.text] if example.text is not None else [m["content"] for m in example.messages]


def embedding_items(grit, config: TrainConfig, sampler: StepSampler, embedding: list, batch_index: int,
                    processes: Processes) -> tuple[list, list]:
    """This process's tokenised queries and documents of contrastive batch ``batch_index``.

    Each query brings its group (positive, then hard negatives), drawn with a random state of
    its own so that a resumed run, or another number of processes, draws the same documents.
    """
    dataset, indices = sampler.batch(batch_index)
    queries, documents = [], []
    for index in local_slice(indices, processes.rank, processes.world_size):
        example = embedding[dataset][index]
        queries.append(example.query)
        documents += embedding_group(example, config.train_group_size,
                                     random.Random(f"{config.seed}:{batch_index}:{dataset}:{index}"))
    return (tokenize_embedding_texts(grit, queries, config.query_max_length),
            tokenize_embedding_texts(grit, documents, config.passage_max_length))


def grit_settings(config: TrainConfig) -> dict:
    """The GritConfig fields a training config decides; the rest come from the model loaded."""
    return {"pooling": config.pooling, "attention": config.embedding_attention}


def build_model(config: TrainConfig, embedding: list, generative: list, resume_dir: Path | None, device):
    """The GritLM to train: from a checkpoint, a local model directory, or built tiny.

    Every path ends with the GritConfig the training config asks for (pooling, attention), so a
    resumed run embeds exactly as the run it continues.
    """
    from ..model.config import GritConfig
    from ..model.gritlm import GritLM

    if resume_dir is not None and not config.lora_r:  # LoRA runs rebuild the base, then load the adapters
        return GritLM.from_pretrained(resume_dir, dtype="float32", device=device, **grit_settings(config))
    if config.model:
        grit = GritLM.from_pretrained(config.model, dtype="float32", device=device, **grit_settings(config))
        if config.compact_format:
            from ..model.compact_format import add_marker_tokens

            grit = add_marker_tokens(grit)
        return grit
    from ..model.tiny import build_tiny_model, train_tokenizer

    if config.tokenizer:
        from transformers import AutoTokenizer

        if not (Path(config.tokenizer) / "tokenizer_config.json").is_file():
            raise ValueError(f"config: tokenizer={config.tokenizer!r} is not a tokenizer directory "
                             "(no tokenizer_config.json; `gritkit data build` makes runs/data/tokenizer)")
        tokenizer = AutoTokenizer.from_pretrained(config.tokenizer)
    else:
        tokenizer = train_tokenizer(_corpus(config, embedding, generative), vocab_size=config.vocab_size)
    grit = build_tiny_model(config.architecture, tokenizer, seed=config.seed, config=GritConfig(**grit_settings(config)),
                            zero_residual=config.zero_init_residual, tie_word_embeddings=config.tie_embeddings,
                            hidden_size=config.hidden_size, num_layers=config.num_layers,
                            num_heads=config.num_heads, num_kv_heads=config.num_heads)
    grit.model.to(device)
    return grit


def _prepare(grit, config: TrainConfig, processes: Processes) -> list:
    """LoRA, gradient checkpointing, identical start weights on every process, FSDP sharding.

    Returns the FSDP-sharded decoder layers (none unless parallel=fsdp under torchrun)."""
    if config.lora_init:
        grit.model = _saved_adapter(grit.model, config)
    elif config.lora_r:
        from peft import LoraConfig, get_peft_model

        grit.model = get_peft_model(grit.model, LoraConfig(
            r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
            target_modules=config.lora_target_modules, task_type="CAUSAL_LM"))
    if config.gradient_checkpointing:
        grit.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    grit.model.train()
    if processes.distributed:
        with torch.no_grad():
            for tensor in [*grit.model.parameters(), *grit.model.buffers()]:
                torch.distributed.broadcast(tensor, 0)
        if config.parallel == "fsdp":
            return shard_model(grit.model, processes)
    return []


def _saved_adapter(model, config: TrainConfig):
    """``model`` with the LoRA adapter saved in ``config.lora_init`` (peft's format), trainable.

    The run continues that adapter (a shipped model's ``adapter/``, or a run's ``final/adapter``),
    so what it saves is again one adapter of the same shape on the same base; the adapter's own
    rank, scaling and modules must be the ones the config names."""
    from peft import PeftConfig, PeftModel

    path = Path(config.lora_init)
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(f"config: lora_init={config.lora_init!r} is not a LoRA adapter directory "
                                "(no adapter_config.json)")
    saved = PeftConfig.from_pretrained(str(path))
    wanted = {"r": config.lora_r, "lora_alpha": config.lora_alpha, "target_modules": set(config.lora_target_modules)}
    found = {"r": saved.r, "lora_alpha": saved.lora_alpha, "target_modules": set(saved.target_modules)}
    for key in wanted:
        if wanted[key] != found[key]:
            raise ValueError(f"config: lora_init {path} has {key}={found[key]}, the config says {wanted[key]}; "
                             "make them equal")
    model = PeftModel.from_pretrained(model, str(path), is_trainable=True)
    for parameter in model.parameters():  # a shipped adapter is float16; train in the base's dtype
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    return model


def parameter_groups(model, params: list, config: TrainConfig) -> list[dict]:
    """AdamW groups: the untied LM head at ``lm_head_lr_scale`` x the learning rate, the rest at 1x.

    Only the next-token loss trains an untied head, and Adam moves every weight by about the
    learning rate per step whatever its gradient, so in a unified run (one generative batch per
    step) the head can take larger steps without touching what the contrastive loss shapes.
    """
    if config.lm_head_lr_scale == 1.0:
        return [{"params": params}]
    head = model.get_output_embeddings()
    if head is None or head.weight is model.get_input_embeddings().weight:
        raise ValueError("config: lm_head_lr_scale needs an untied LM head (tie_embeddings: false)")
    head_ids = {id(p) for p in head.parameters()}
    return [{"params": [p for p in params if id(p) not in head_ids]},
            {"params": [p for p in params if id(p) in head_ids], "lr": config.learning_rate * config.lm_head_lr_scale}]


def lr_factor(step: int, total: int, warmup_ratio: float) -> float:
    """Linear warm-up over ``ceil(warmup_ratio * total)`` steps, then linear decay to 0 at ``total``."""
    warmup = math.ceil(warmup_ratio * total)
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


BUDGET_CALIBRATION_STEPS = 10


class StepSchedule:
    """How many optimiser steps the run takes, and the learning-rate factor of each.

    Without a time budget the total is fixed. With ``max_minutes`` it is re-fitted after every
    step, once ``BUDGET_CALIBRATION_STEPS`` have run, from the mean step time so far (the
    machine's speed may change during a run): cut to the current step when the budget is spent,
    never above ``max_steps`` when that is set. Warm-up and decay follow the revised total.
    """

    def __init__(self, total: int, warmup_ratio: float, max_minutes: float = 0.0, max_steps: int = 0):
        self.total, self.warmup_ratio = total, warmup_ratio
        self.budget_s, self.max_steps = 60 * max_minutes, max_steps

    def factor(self, step: int) -> float:
        return lr_factor(step, self.total, self.warmup_ratio)

    def refit(self, step: int, start: int, elapsed_s: float) -> int:
        """Update and return the total after ``step`` steps, ``elapsed_s`` seconds after step ``start``."""
        if not self.budget_s:
            return self.total
        if elapsed_s >= self.budget_s:
            self.total = step
        elif step - start >= BUDGET_CALIBRATION_STEPS:
            fitted = step + int((self.budget_s - elapsed_s) / (elapsed_s / (step - start)))
            self.total = min(fitted, self.max_steps) if self.max_steps else fitted
        return self.total


def _use_bf16(config: TrainConfig, device: torch.device) -> bool:
    if config.bf16 != "auto":
        return config.bf16 == "true"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _check_sizes(config: TrainConfig, processes: Processes) -> None:
    keys = ["embedding_batch_size", "generative_batch_size"] + (["doc_cache_batch_size"] if config.doc_cache_data else [])
    for key in keys:
        if getattr(config, key) % processes.world_size:
            raise ValueError(f"config: {key}={getattr(config, key)} is not divisible by {processes.world_size} processes")
    if config.lora_r and config.parallel == "fsdp" and processes.distributed:
        raise ValueError("config: LoRA trains few weights; use parallel=ddp with lora_r > 0")


def step_seconds(record: dict) -> float:
    """Wall time of the step a metrics.jsonl record describes: its tokens over its tokens/s."""
    return record["tokens"] / record["tokens_per_s"] if record.get("tokens_per_s") else 0.0


class _Metrics:
    """metrics.jsonl (kept up to the resumed step) and TensorBoard when it is installed."""

    def __init__(self, output_dir: Path, start_step: int, tensorboard: bool):
        self.path = output_dir / "metrics.jsonl"
        kept = []
        if start_step and self.path.is_file():
            kept = [line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= start_step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)
        self.handle = self.path.open("a")
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                pass
            else:
                self.writer = SummaryWriter(str(output_dir / "tensorboard"))

    def log(self, record: dict) -> None:
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and value is not None:
                    self.writer.add_scalar(f"train/{key}", value, record["step"])

    def close(self) -> None:
        self.handle.close()
        if self.writer is not None:
            self.writer.close()


class Callback:
    """Hooks into the training loop; subclass and override what you need.

    ``on_step`` runs on every process after each optimiser step with that step's record (the
    line written to metrics.jsonl, the same on every process).
    """

    def on_step(self, record: dict) -> None:
        pass


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


def _train(config: TrainConfig, processes: Processes, callbacks: list[Callback], log) -> dict:
    _check_sizes(config, processes)
    output_dir = Path(config.output_dir)
    embedding, generative_files, doc_cache_files = load_data(config, output_dir / DATA_INDEX if config.resume else None)
    checkpoint_dir = output_dir / "checkpoint"
    resume_dir = checkpoint_dir if config.resume and (checkpoint_dir / "training_state.pt").is_file() else None
    if not config.resume and ((output_dir / "metrics.jsonl").exists() or checkpoint_dir.exists()):
        raise ValueError(f"{output_dir} already holds a run; set resume=true to continue it or choose another output_dir")

    threads = torch.get_num_threads()
    if processes.device.type == "cpu":
        threads = choose_threads(config.threads, int(os.environ.get("LOCAL_WORLD_SIZE", processes.world_size)))
        torch.set_num_threads(threads)
        log(f"train: {threads} CPU thread(s) per process"
            + ("" if config.threads else f" (free cores of {os.cpu_count()}; set threads=N to choose)"))
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    grit = build_model(config, embedding, generative_files, resume_dir, processes.device)
    if config.matryoshka_dims and max(config.matryoshka_dims) >= grit.embedding_dim:
        raise ValueError(f"config: matryoshka_dims {config.matryoshka_dims} must be smaller than the model's "
                         f"embedding size {grit.embedding_dim}")
    generative = None
    if generative_files:
        generative = tokenize_generative_files(grit.tokenizer, generative_files, config.generative_max_length,
                                               progress=config.progress_bar and processes.is_main)
        for line in generative.describe(config.generative_max_length):
            log(f"train: {line}")
        if not generative.items:
            raise ValueError(f"config: every generative example was dropped at generative_max_length="
                             f"{config.generative_max_length}: none keeps half of its answer; raise it")
    doc_cache = None
    if doc_cache_files:
        doc_cache = tokenize_doc_cache_files(grit, doc_cache_files, config.doc_cache_max_length,
                                             config.generative_max_length,
                                             progress=config.progress_bar and processes.is_main)
        for line in doc_cache.describe():
            log(f"train: {line}")
        if not doc_cache.items:
            raise ValueError("config: every doc cache sample was dropped at generative_max_length="
                             f"{config.generative_max_length}; raise it")
    emb_sampler = gen_sampler = doc_sampler = None
    if embedding:
        emb_sampler = StepSampler([len(d) for d in embedding], config.embedding_batch_size, config.seed,
                                  config.embedding_data)
    if generative:
        gen_sampler = StepSampler([len(generative.items)], config.generative_batch_size, config.seed + 1,
                                  ["generative_data (examples kept after fitting to length)"])
    if doc_cache:
        doc_sampler = StepSampler([len(doc_cache.items)], config.doc_cache_batch_size, config.seed + 2,
                                  ["doc_cache_data (samples kept after fitting to length)"])
    # By default one pass over the smaller stream: it is drawn without repetition until exhausted.
    epochs = [s.steps_per_epoch * (config.embedding_every if s is emb_sampler else 1)
              for s in (emb_sampler, gen_sampler) if s]
    max_steps = config.max_steps or min(epochs)
    sharded = _prepare(grit, config, processes)
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
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        for dataset in [*embedding, *(examples for _, examples in generative_files + doc_cache_files)]:
            dataset.save_index(output_dir / DATA_INDEX)
        if generative is not None:
            (output_dir / "truncation.json").write_text(json.dumps(
                {"generative_max_length": config.generative_max_length, "files": generative.counts,
                 **({"doc_cache_files": doc_cache.counts} if doc_cache else {})}, indent=2) + "\n")
        metrics = _Metrics(output_dir, start, config.tensorboard)
    bf16 = _use_bf16(config, processes.device)
    def sync(last: bool) -> None:  # FSDP reduce-scatters on the step's last backward pass only
        for layer in sharded:
            layer.set_requires_gradient_sync(last)

    from tqdm.auto import tqdm

    bar = tqdm(total=max_steps, initial=start, desc="train", unit="step",
               disable=not (config.progress_bar and processes.is_main))
    record, rates = {}, []
    clock = time.perf_counter() - spent_s
    step = start
    while step < schedule.total:
        began = time.perf_counter()
        loss_rep = loss_gen = loss_doc = None
        q_items = d_items = items = doc_items = None
        tokens = 0
        # With embedding_every N the contrastive batch comes on every N-th step only: the LM side
        # gets N times the optimiser steps for the same compute (the embedding pass costs most).
        if emb_sampler is not None and config.lambda_rep and step % config.embedding_every == 0:
            q_items, d_items = embedding_items(grit, config, emb_sampler, embedding, step // config.embedding_every,
                                               processes)
            tokens += sum(len(ids) for ids, _ in q_items + d_items)
        if gen_sampler is not None and config.lambda_gen:
            _, indices = gen_sampler.batch(step)
            items = [generative.items[i] for i in local_slice(indices, processes.rank, processes.world_size)]
            tokens += sum(len(ids) for ids, _ in items)
        if doc_sampler is not None and config.lambda_doc_cache:
            _, indices = doc_sampler.batch(step)
            doc_indices = local_slice(indices, processes.rank, processes.world_size)
            doc_items = [doc_cache.items[i] for i in doc_indices]
            tokens += sum(len(ids) for ids, _ in doc_items)
        generative_settings = dict(micro_batch_size=config.generative_micro_batch_size,
                                   aggregation=config.loss_gen_aggregation, processes=processes, bf16=bf16)
        # FSDP synchronises on the step's last backward: the doc cache pass comes last when it runs.
        sync_main = (lambda last: sync(last and doc_items is None))
        if config.single_pass and q_items is not None and items is not None:
            loss_rep, loss_gen = single_pass_backward(
                grit, q_items, d_items, items, capacity=config.packed_row_length("both"),
                rows_per_pass=config.generative_micro_batch_size, temperature=config.temperature,
                group_size=config.train_group_size, chunk_size=config.embedding_chunk_size,
                matryoshka_dims=config.matryoshka_dims, lambda_rep=config.lambda_rep, lambda_gen=config.lambda_gen,
                before_backward=sync_main, **generative_settings)
            loss_rep = all_reduce_sum(loss_rep, processes) / processes.world_size
        else:
            if q_items is not None:
                loss_rep = embedding_backward(
                    grit, q_items, d_items, temperature=config.temperature, group_size=config.train_group_size,
                    chunk_size=config.embedding_chunk_size, weight=config.lambda_rep, processes=processes,
                    bf16=bf16, matryoshka_dims=config.matryoshka_dims,
                    pack_length=config.packed_row_length("embedding"), before_backward=sync_main, last=items is None)
                loss_rep = all_reduce_sum(loss_rep, processes) / processes.world_size
            if items is not None and config.packing:
                loss_gen = generative_backward_packed(
                    grit.model, items, pad_id=grit.tokenizer.pad_token_id,
                    capacity=config.packed_row_length("generative"), rows_per_pass=config.generative_micro_batch_size,
                    weight=config.lambda_gen, before_backward=sync_main, **generative_settings)
            elif items is not None:
                loss_gen = generative_backward(
                    grit.model, items, pad_id=grit.tokenizer.pad_token_id, weight=config.lambda_gen,
                    before_backward=sync_main, **generative_settings)
        if doc_items is not None:
            loss_doc = generative_backward_packed(
                grit.model, doc_items, pad_id=grit.tokenizer.pad_token_id,
                capacity=config.doc_cache_max_length + config.generative_max_length,
                rows_per_pass=config.generative_micro_batch_size, weight=config.lambda_doc_cache,
                before_backward=sync, prefixes=[doc_cache.prefixes[i] for i in doc_indices], **generative_settings)
        average_gradients(replicated(params) if fsdp else params, processes)
        if config.max_grad_norm > 0:
            clip_grad_norm(params, config.max_grad_norm)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tokens = all_reduce_sum(tokens, processes)
        rate = tokens / (time.perf_counter() - began)
        rates.append(rate)
        record = {"step": step + 1, "loss_rep": loss_rep, "loss_gen": loss_gen,
                  **({"loss_doc_cache": loss_doc} if doc_sampler is not None else {}), "lr": lr, "tokens": int(tokens),
                  "tokens_per_s": round(rate, 1)}
        if metrics is not None:
            metrics.log(record)
        for callback in callbacks:
            callback.on_step(record)
        bar.update(1)
        bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k.startswith("loss") and v is not None})
        if config.save_every and (step + 1) % config.save_every == 0 and step + 1 < schedule.total:
            save_checkpoint(checkpoint_dir, grit, optimizer, scheduler, step + 1, processes, fsdp,
                            schedule={"total": schedule.total, "elapsed_s": time.perf_counter() - clock})
        step += 1
        if config.max_minutes:
            # averaged over processes so that all of them agree on the total
            elapsed = all_reduce_sum(time.perf_counter() - clock, processes) / processes.world_size
            bar.total = schedule.refit(step, budget_start, elapsed)
    bar.close()
    final = output_dir / "final"
    save_model(grit, final, processes, fsdp)
    if metrics is not None:
        metrics.close()
    return {"steps": step, "loss_rep": record.get("loss_rep"), "loss_gen": record.get("loss_gen"),
            "tokens_per_s": sorted(rates)[len(rates) // 2] if rates else None, "final": str(final),
            "output_dir": str(output_dir), "threads": threads,
            "truncation": generative.counts if generative else {}}
