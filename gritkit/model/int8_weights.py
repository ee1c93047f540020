"""Weight-only int8 linear layers: a quarter of fp32's bytes to read on every decode step.

A decode step of one stream multiplies one row by every weight matrix, so its time is the time to
read the weights (SmolLM2-135M: 540 MB in fp32, 135 MB in int8). Each output channel (row of the
weight) keeps its own scale: ``w ~= q * scale`` with ``q`` in [-127, 127] and ``scale`` a bfloat16
number (so that the product is exact in bfloat16 and both kernels below compute the same thing).
Activations enter the product in bfloat16 and leave it in their own dtype, so norms, attention,
residuals and KV caches stay in the model's dtype (fp32 caches splice into fp32 decodes as before).

Two kernels, chosen per call by the number of rows, as measured on the AVX-512 EPYC of
``benchmarks/README.md`` (1536x576 weight, 2 threads):

- up to ``FEW_ROWS`` rows (decode steps, small batches): ``torch._weight_int8pack_mm``, which
  reads the int8 weight directly, on every thread (0.026 ms for one row; fp32 F.linear: 0.075 ms);
- more rows (prefill, embedding batches): the int8 weight converted to bfloat16 (exact, 0.06 ms),
  one bfloat16 matrix product and the per-channel scale applied to its output (1,024 rows: 4.4 ms;
  fp32: 9.0 ms). Converting costs next to nothing beside the product at these sizes.

A quantized model is for inference: its weights are buffers (nothing trains them) and it cannot be
saved (load the fp32 model to save; quantizing is a loading option).
"""

from __future__ import annotations

import torch

QUANTIZATIONS = ("int8",)
FEW_ROWS = 32  # at most this many rows use the int8 kernel; more convert the weight (see above)


class Int8WeightLinear(torch.nn.Module):
    """A ``torch.nn.Linear`` stored as int8 weights with one bfloat16 scale per output channel."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float()
        # The scale is rounded to bfloat16 first and the levels computed from the rounded scale, so
        # q * scale is exactly what both kernels multiply by; a level past 127 by rounding is cut.
        scale = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12).to(torch.bfloat16)
        levels = torch.round(weight / scale.float()[:, None]).clamp(-127, 127)
        self.register_buffer("weight_int8", levels.to(torch.int8).contiguous())
        self.register_buffer("scale", scale)
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def dequantized(self) -> torch.Tensor:
        """The fp32 weight this layer multiplies by (``q * scale``)."""
        return self.weight_int8.float() * self.scale.float()[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
        if len(rows) <= FEW_ROWS and x.device.type == "cpu":
            out = torch._weight_int8pack_mm(rows, self.weight_int8, self.scale)
        else:
            out = torch.nn.functional.linear(rows, self.weight_int8.to(torch.bfloat16)) * self.scale
        out = out.to(x.dtype).reshape(*shape[:-1], self.out_features)
        return out + self.bias.to(x.dtype) if self.bias is not None else out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


def check_quantization(quantization: str | None) -> None:
    """ValueError unless ``quantization`` is None or one of ``QUANTIZATIONS``."""
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)} (or None), got {quantization!r}")


def quantize_weights(model: torch.nn.Module, quantization: str) -> int:
    """Replace every ``torch.nn.Linear`` of ``model`` (subclasses included) by its
    ``quantization`` form, in place; returns how many were replaced."""
    check_quantization(quantization)
    targets = [(name, module) for name, module in model.named_modules()
               if name and isinstance(module, torch.nn.Linear)]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, Int8WeightLinear(module))
    return len(targets)


def quantization_of(model: torch.nn.Module) -> str | None:
    """``"int8"`` when ``model`` holds int8 weight layers, else None."""
    return "int8" if any(isinstance(m, Int8WeightLinear) for m in model.modules()) else None
