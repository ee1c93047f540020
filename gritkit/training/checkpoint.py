"""Training checkpoints: a Hugging Face model directory plus the state needed to resume.

    DIR/checkpoint/  config.json, model.safetensors, tokenizer, gritkit_config.json  (GritLM.from_pretrained)
                     training_state.pt  (step, optimiser, scheduler, LoRA weights if any)
                     rng-{rank}.pt      (each process's random state)
                     COMPLETE           (written last: the step and the number of processes)

A checkpoint is written into a temporary sibling directory and renamed into place once every
process has written its part, so a run killed at any moment leaves either the previous
checkpoint or the new one, never a mixture. LoRA runs are saved merged (base + low-rank delta),
so the model directory loads like any other; the unmerged adapter weights needed to continue
training go into training_state.pt.

A kill inside that rename (``gritkit.files.replace_dir``: the old checkpoint moved aside to
``.checkpoint.old-PID``, then the new one moved in) leaves no ``checkpoint`` at all, and a kill just
before it leaves the newest one in ``.checkpoint.tmp``. ``recover_checkpoint`` therefore looks at
every directory a save leaves behind, resumes from the newest one whose ``COMPLETE`` marker is
there, and removes the rest.

The state files hold plain data only (tensors, numbers, strings, lists, dicts; the optimiser's and
scheduler's own state dicts), so they are read with ``torch.load(weights_only=True)``: loading a
checkpoint never runs code a pickle carries.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist

from ..parallel.distributed import Processes
from ..model.gritlm import GritLM
from ..files import replace_dir

STATE_NAME = "training_state.pt"
COMPLETE_NAME = "COMPLETE"
# what an interrupted save leaves in output_dir: .checkpoint.tmp, .checkpoint.old-PID, and the model
# directory writer's own ..checkpoint.tmp.tmp-PID, .final.tmp-PID, .final.old-PID
_LEFTOVER = re.compile(r"\.+(checkpoint|final)(\.tmp)?\.(tmp|old)(-\d+)?")


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
    torch.save(_rng_state(processes), tmp / f"rng-{processes.rank}.pt")
    _barrier(processes)
    if processes.is_main:
        mark_complete(tmp, step, processes)
        replace_dir(tmp, path)
    _barrier(processes)


def _rng_state(processes: Processes) -> dict:
    """This process's random state as tensors and numbers (Python's state tuple as a tensor)."""
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(), "python": torch.tensor(internal, dtype=torch.int64),
            "python_version": version, "python_gauss_next": gauss_next,
            "cuda": torch.cuda.get_rng_state(processes.device) if processes.device.type == "cuda" else None}


def _set_rng_state(rng: dict, processes: Processes) -> None:
    torch.set_rng_state(rng["torch"])
    random.setstate((rng["python_version"], tuple(rng["python"].tolist()), rng["python_gauss_next"]))
    if rng["cuda"] is not None:
        torch.cuda.set_rng_state(rng["cuda"], processes.device)


def mark_complete(path: Path, step: int, processes: Processes) -> None:
    """Write ``path/COMPLETE`` (step, processes) once everything else of the checkpoint is there.

    It is the last file a save writes, so its presence (parseable) is what makes a directory a
    checkpoint a run may resume from, wherever a crash left it.
    """
    tmp = path / f".{COMPLETE_NAME}.tmp"
    tmp.write_text(json.dumps({"step": step, "processes": processes.world_size}) + "\n")
    os.replace(tmp, path / COMPLETE_NAME)


def saved_step(path: Path) -> int | None:
    """The step of the complete checkpoint in ``path``; None when ``path`` holds none (or a torn one)."""
    try:
        return int(json.loads((Path(path) / COMPLETE_NAME).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def recover_checkpoint(output_dir: Path, processes: Processes, log) -> Path | None:
    """``output_dir/checkpoint`` holding the newest complete checkpoint a save left anywhere, or None.

    A complete checkpoint found in a save's temporary directory (a run killed between the two
    renames, or just before them) is moved to ``output_dir/checkpoint``; every other leftover of
    an interrupted save (``.checkpoint.tmp``, ``.checkpoint.old-*``, ``.final.tmp-*``...) is
    removed. Process 0 does the moving; the others wait for it.
    """
    output_dir, target = Path(output_dir), Path(output_dir) / "checkpoint"
    if processes.is_main and output_dir.is_dir():
        _recover(output_dir, target, log)
    _barrier(processes)
    # every process reads the same directory, so all of them stop here or none
    if target.exists() and saved_step(target) is None:
        raise ValueError(f"{target} has no {COMPLETE_NAME} marker: it is not a complete checkpoint of this trainer; "
                         "move it away to start the run over")
    return target if target.exists() else None


def _recover(output_dir: Path, target: Path, log) -> None:
    leftovers = sorted(p for p in output_dir.iterdir() if _LEFTOVER.fullmatch(p.name))
    # max keeps the first of equal steps: the canonical directory wins a tie
    complete = [p for p in [target, *leftovers] if p.is_dir() and saved_step(p) is not None]
    newest = max(complete, key=saved_step, default=None)
    if newest is not None and newest != target:
        shutil.rmtree(target, ignore_errors=True)
        os.replace(newest, target)
        log(f"train: recovered the checkpoint of step {saved_step(target)} from {newest.name} "
            f"(a save was interrupted) into {target}")
    removed = [p for p in leftovers if p != newest]
    for path in removed:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    if removed:
        log(f"train: removed what interrupted saves left in {output_dir}: {', '.join(p.name for p in removed)}")


def load_checkpoint(path: Path, grit: GritLM, optimizer, scheduler, processes: Processes,
                    fsdp: bool = False) -> tuple[int, dict | None]:
    """Restore optimiser, scheduler, LoRA weights and this process's RNG; return the step and
    the step schedule's saved state.

    Full model weights are loaded by building the model from ``path`` itself (before sharding).
    """
    path = Path(path)
    state = _load_plain(path / STATE_NAME)
    rng_file = path / f"rng-{processes.rank}.pt"
    if not rng_file.is_file():
        raise ValueError(f"{path} was written by fewer processes; resume with the same number of processes")
    rng = _load_plain(rng_file)
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
    _set_rng_state(rng, processes)
    return state["step"], state["schedule"]


def _load_plain(file: Path) -> dict:
    """``torch.load`` of a state file as plain data only: a file holding other objects is refused, unrun."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{file}: cannot be read as plain data (tensors, numbers, strings), so it is not loaded: "
                         f"{reason}") from None
