"""Training checkpoints: a Hugging Face model directory plus the state needed to resume.

    DIR/checkpoint/  config.json, model.safetensors, tokenizer, gritkit_config.json  (GritLM.from_pretrained)
                     training_state.pt  (step, optimiser, scheduler, LoRA weights if any)
                     rng-{rank}.pt      (each process's random state)

A checkpoint is written into a temporary sibling directory and renamed into place once every
process has written its part, so a run killed at any moment leaves either the previous
checkpoint or the new one, never a mixture. LoRA runs are saved merged (base + low-rank delta),
so the model directory loads like any other; the unmerged adapter weights needed to continue
training go into training_state.pt.
"""

from __future__ import annotations

import random
import shutil
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist

from ..parallel.distributed import Processes
from ..model.gritlm import GritLM
from ..files import replace_dir

STATE_NAME = "training_state.pt"


def _barrier(processes: Processes) -> None:
    if processes.distributed:
        dist.barrier()


def _full_model_state(grit: GritLM, processes: Processes, fsdp: bool) -> dict | None:
    """Full-precision state dict in Hugging Face names (None where the model can save itself)."""
    model = grit.model
    if hasattr(model, "get_base_model"):  # peft: fold every LoRA delta into its base weight
        merged = {}
        deltas = {}
        for name, module in model.get_base_model().named_modules():
            if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
                deltas[f"{name}.weight"] = sum(module.get_delta_weight(a) for a in module.active_adapters)
        for name, tensor in model.get_base_model().state_dict().items():
            if "lora_" in name:
                continue
            name = name.replace(".base_layer.", ".")
            merged[name] = (tensor + deltas[name]) if name in deltas else tensor
        return {k: v.detach().cpu().contiguous() for k, v in merged.items()}
    if fsdp and processes.distributed:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return None


def save_model(grit: GritLM, path: Path, processes: Processes, fsdp: bool = False) -> None:
    """Write ``grit`` (merged, gathered) to ``path`` in Hugging Face format from rank 0.

    A LoRA model also writes its adapter alone to ``path/adapter`` (peft's format), which is
    what a model built on a pretrained base ships (see ``gritkit.weights.shipped``).
    """
    state = _full_model_state(grit, processes, fsdp)
    if processes.is_main:
        peft = hasattr(grit.model, "get_base_model")
        model = grit.model.get_base_model() if peft else grit.model
        saver = GritLM(model, grit.tokenizer, grit.config, projection_head=grit.projection_head,
                       check_bidirectional=False)
        # LoRA freezes every embedding row: those of a compact-format run (gritkit.model.compact_format)
        # are the base's plus marker rows that adding the markers again re-creates exactly, so
        # the adapter stays LoRA weights only (peft would save the whole resized matrix).
        adapter = partial(grit.model.save_pretrained, save_embedding_layers=False) if peft else None
        saver.save_pretrained(path, state_dict=state, also=adapter)
    _barrier(processes)


def _optimizer_state(grit: GritLM, optimizer, fsdp: bool, processes: Processes) -> dict:
    if fsdp and processes.distributed:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(grit.model, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return optimizer.state_dict()


def save_checkpoint(path: Path, grit: GritLM, optimizer, scheduler, step: int, processes: Processes,
                    fsdp: bool = False, schedule: dict | None = None) -> None:
    """Atomically write the resumable state after ``step`` optimiser steps to ``path``.

    ``schedule`` is the step schedule's state (its total and the training seconds spent), so that
    a resumed run with a time budget keeps the budget of the run it continues.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp"
    optimizer_state = _optimizer_state(grit, optimizer, fsdp, processes)
    if processes.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
    save_model(grit, tmp, processes, fsdp)
    if processes.is_main:
        lora = {n: p.detach().cpu() for n, p in grit.model.named_parameters() if p.requires_grad} \
            if hasattr(grit.model, "get_base_model") else None
        torch.save({"step": step, "optimizer": optimizer_state, "scheduler": scheduler.state_dict(), "lora": lora,
                    "schedule": schedule},
                   tmp / STATE_NAME)
    _barrier(processes)
    torch.save({"torch": torch.get_rng_state(), "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state(processes.device) if processes.device.type == "cuda" else None},
               tmp / f"rng-{processes.rank}.pt")
    _barrier(processes)
    if processes.is_main:
        replace_dir(tmp, path)
    _barrier(processes)


def load_checkpoint(path: Path, grit: GritLM, optimizer, scheduler, processes: Processes,
                    fsdp: bool = False) -> tuple[int, dict | None]:
    """Restore optimiser, scheduler, LoRA weights and this process's RNG; return the step and
    the step schedule's saved state.

    Full model weights are loaded by building the model from ``path`` itself (before sharding).
    """
    path = Path(path)
    state = torch.load(path / STATE_NAME, map_location="cpu", weights_only=False)
    if state["lora"] is not None:
        params = dict(grit.model.named_parameters())
        with torch.no_grad():
            for name, value in state["lora"].items():
                params[name].copy_(value)
    if fsdp and processes.distributed:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(grit.model, optimizer, optim_state_dict=state["optimizer"],
                                 options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng_file = path / f"rng-{processes.rank}.pt"
    if not rng_file.is_file():
        raise ValueError(f"{path} was written by fewer processes; resume with the same number of processes")
    rng = torch.load(rng_file, weights_only=False)
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    if rng["cuda"] is not None:
        torch.cuda.set_rng_state(rng["cuda"], processes.device)
    return state["step"], state.get("schedule")
