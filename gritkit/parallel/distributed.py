"""Several processes under torchrun: set-up, the gather for cross-device negatives, gradient sync.

Two ways to spread a model (config ``parallel``):

- ``ddp``: every process holds the whole model; after the step's backward passes gradients are
  averaged with one all-reduce per bucket. This is DDP's arithmetic done explicitly, because
  GritLM.embed calls the decoder body directly, which a DistributedDataParallel wrapper would
  not see, and because GradCache and accumulation make several backward passes per step.
- ``fsdp``: FSDP2 ``fully_shard`` on every decoder layer; FSDP averages the layers' gradients
  itself (reduce-scatter, on the step's last backward pass only); the few remaining weights
  (embeddings, norm, head) are replicated and averaged as in ``ddp``.

Both average gradients over processes; see gritkit/training/losses.py for how losses are scaled so that
the average equals the gradient of one process running the global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_processes() -> Processes:
    """Join the torchrun process group if there is one (NCCL on GPUs, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Processes(dist.get_rank() if world_size > 1 else 0, world_size, device)


def teardown_processes(processes: Processes) -> None:
    if processes.distributed and dist.is_initialized():
        # every rank done (e.g. rank 0 saving) before any tears down: a gloo peer destroyed while
        # the other still holds pending pair operations can abort ("terminate called ...")
        dist.barrier()
        dist.destroy_process_group()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward sums every process's gradient for this slice."""

    @staticmethod
    def forward(ctx, tensor):
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rows = tensor.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)  # sum over processes
        start = dist.get_rank() * ctx.rows
        return grad[start: start + ctx.rows]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` of all processes (same shape on each) in rank order, differentiably."""
    return _GatherWithGrad.apply(tensor)


def all_reduce_sum(value: float | int, processes: Processes) -> float:
    """Sum a Python number over processes."""
    if not processes.distributed:
        return value
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=processes.device)
    dist.all_reduce(tensor)
    return tensor.item()


def average_gradients(parameters, processes: Processes, bucket_bytes: int = 25 * 2**20) -> None:
    """Average the gradients of replicated ``parameters`` over processes, in flat buckets."""
    if not processes.distributed:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    bucket, size = [], 0
    for grad in grads + [None]:
        if grad is not None:
            bucket.append(grad)
            size += grad.numel() * grad.element_size()
        if bucket and (grad is None or size >= bucket_bytes):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat)  # gloo has no AVG: sum, then divide
            flat /= processes.world_size
            offset = 0
            for g in bucket:
                g.copy_(flat[offset: offset + g.numel()].view_as(g))
                offset += g.numel()
            bucket, size = [], 0


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a causal LM (also inside a PEFT wrapper)."""
    return [m for m in model.modules() if type(m).__name__.endswith(("DecoderLayer", "Block"))]


def shard_model(model: torch.nn.Module, processes: Processes) -> list[torch.nn.Module]:
    """FSDP2: shard every decoder layer; return the sharded layers.

    Only the layers are sharded: embeddings, final norm and LM head stay replicated (their
    gradients are averaged by ``average_gradients``). Sharding the whole model as one more unit
    would tie its parameters to the model's own forward, which GritLM.embed bypasses by calling
    the decoder body directly (it skips the LM head). The layers hold nearly all the weights.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(processes.device.type, (processes.world_size,))
    layers = decoder_layers(model)
    if not layers:
        raise ValueError(f"parallel=fsdp: no decoder layers found in {type(model).__name__}")
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    return layers


def replicated(parameters) -> list[torch.nn.Parameter]:
    """The parameters FSDP does not manage (plain tensors, not DTensors)."""
    from torch.distributed.tensor import DTensor

    return [p for p in parameters if not isinstance(p, DTensor)]


def clip_grad_norm(parameters, max_norm: float) -> float:
    """Clip by the global gradient norm over sharded (DTensor) and replicated gradients alike."""
    grads = [p.grad for p in parameters if p.grad is not None]
    squares = []
    for grad in grads:
        norm = grad.detach().float().norm(2)
        squares.append((norm.full_tensor() if hasattr(norm, "full_tensor") else norm) ** 2)
    total = torch.stack(squares).sum().sqrt() if squares else torch.tensor(0.0)
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for grad in grads:
        grad.mul_(scale.to(grad.device) if not hasattr(grad, "full_tensor") else scale.item())
    return total.item()
