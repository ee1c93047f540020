"""Linear layers whose weights are reordered once into oneDNN's blocked layout, for CPU inference.

``torch.nn.functional.linear`` on a CPU calls MKL's GEMM on the weight as stored, which for the
few rows of a decode step reads the weights far below the memory's speed: 16 rows through
SmolLM2-135M's 211 linear layers (weights not in cache) take ~83 ms in fp32, where oneDNN's
kernel on a weight reordered once for it (``torch.ops.mkldnn._reorder_linear_weight``, what
inductor's ``freezing`` does inside a compiled graph) takes ~38 ms; one row 47 -> 27 ms; 512-2,048
rows (prefill, embedding batches) 1.04-1.21x; bfloat16 1.07-1.65x (2 threads, AMD EPYC with
AVX-512; ``benchmarks/README.md``). The products are the same sums in another order: outputs
agree with ``F.linear`` to float rounding, not bitwise (tested), and greedy answers stay the same
on the shipped models in the benchmark.

The reordered weight replaces the layer's parameter, so a prepacked model is for inference: it
cannot be saved or trained (load the model without ``prepack`` for that), nor compiled (inductor
cannot lower a reordered weight; it reorders frozen weights itself under ``compile="max-autotune"``).
A tied output layer gets its own reordered copy (its input embedding still looks up rows): SmolLM2's
113 MB head in fp32; loaded, SmolLM2 holds 1,063 MiB resident prepacked against 842 unpacked.
"""

from __future__ import annotations

import torch

# The batch size oneDNN is told to expect: the server's 16 running chats. The layout it picks for
# 16 also gave 1 row and 2,048-row batches their best times of those measured (1, 16, None).
ROWS_HINT = 16


def prepack_problem(device: torch.device | str, dtype: torch.dtype) -> str | None:
    """Why a model on ``device`` in ``dtype`` cannot be prepacked, or None when it can."""
    if torch.device(device).type != "cpu":
        return f"prepack is for models on the CPU (oneDNN kernels), not {device}"
    if not torch.backends.mkldnn.is_available():
        return "prepack needs PyTorch built with oneDNN (torch.backends.mkldnn), which this build lacks"
    if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "prepack in bfloat16 needs a CPU with bfloat16 instructions (AVX512_BF16 or AMX); use float32"
    if dtype not in (torch.float32, torch.bfloat16):
        return f"prepack supports float32 and bfloat16 weights, not {dtype}"
    return None


class PrepackedLinear(torch.nn.Module):
    """A ``torch.nn.Linear`` for inference whose weight is held in oneDNN's reordered layout."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.register_buffer("packed_weight", torch.ops.mkldnn._reorder_linear_weight(weight, ROWS_HINT))
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            raise RuntimeError("a prepacked linear layer is for inference: it has no gradient "
                               "(load the model without prepack= to train it)")
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, oneDNN-reordered weights"


def prepack_linears(model: torch.nn.Module) -> int:
    """Replace every ``torch.nn.Linear`` of ``model`` (subclasses included) by a ``PrepackedLinear``,
    in place; returns how many were replaced. ValueError (nothing replaced) where the model's
    device or dtype cannot be prepacked."""
    targets = [(name, module) for name, module in model.named_modules()
               if name and isinstance(module, torch.nn.Linear)]
    problem = targets and prepack_problem(targets[0][1].weight.device, targets[0][1].weight.dtype)
    if problem:
        raise ValueError(problem)
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, PrepackedLinear(module))
    # Loaded weights can be views of the checkpoint file mapped into memory (safetensors), which
    # stays mapped, every page read for the reordering resident, while any tensor views it: the
    # rest of the model gets memory of its own, so the mapping goes with the replaced weights
    # (SmolLM2 in fp32: 1,468 -> 1,063 MiB resident after loading; 842 unpacked).
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, PrepackedLinear):
                for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
                    tensor.data = tensor.data.clone()
    return len(targets)


def is_prepacked(model: torch.nn.Module) -> bool:
    """Whether ``model`` holds prepacked linear layers."""
    return any(isinstance(module, PrepackedLinear) for module in model.modules())
