"""One-token decoding on a CPU: each linear layer's matrix-vector product on every thread.

PyTorch computes a linear layer of a single input row (a decode step of one stream) as a GEMV that
runs on one thread, whatever ``torch.get_num_threads()`` says: SmolLM2-135M decodes at the same
~55 ms a step with 1 or 2 threads, reading its weights at one core's bandwidth (~11 GB/s on the AMD
EPYC of benchmarks/README.md). Cutting the weight's rows into one block per thread and multiplying
the blocks as one batched product (``torch.bmm``) runs them in parallel (~21 GB/s on 2 cores). Each
output is the same dot product computed by the same kernel, so the result is bitwise the one of
``F.linear`` (tested); anything but a single row without gradients takes ``F.linear`` as before.
"""

from __future__ import annotations

import math

import torch


@torch.compiler.assume_constant_result
def _threads() -> int:
    # A constant to torch.compile (a compiled decode step is traced for one thread count).
    return torch.get_num_threads()


class ThreadedGemvLinear(torch.nn.Linear):
    """``torch.nn.Linear`` whose single-row inference products are split over the CPU threads."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = math.gcd(self.out_features, _threads())
        weight = self.weight
        if (parts < 2 or x.numel() != self.in_features or torch.is_grad_enabled() or x.device.type != "cpu"
                or x.dtype != weight.dtype or type(weight.data) is not torch.Tensor or not weight.is_contiguous()):
            return super().forward(x)
        blocks = weight.view(parts, self.out_features // parts, self.in_features).transpose(1, 2)
        out = torch.bmm(x.reshape(1, 1, self.in_features).expand(parts, 1, self.in_features), blocks)
        out = out.reshape(*x.shape[:-1], self.out_features)
        return out + self.bias if self.bias is not None else out


def thread_gemvs(model: torch.nn.Module) -> int:
    """Make every plain ``torch.nn.Linear`` of ``model`` a ``ThreadedGemvLinear``, in place (same
    parameters, same state dict); returns how many were changed."""
    changed = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.__class__ = ThreadedGemvLinear
            changed += 1
    return changed


def unthread_gemvs(model: torch.nn.Module) -> int:
    """Undo ``thread_gemvs``: plain ``torch.nn.Linear`` layers again; returns how many were changed."""
    changed = 0
    for module in model.modules():
        if type(module) is ThreadedGemvLinear:
            module.__class__ = torch.nn.Linear
            changed += 1
    return changed
