"""gritkit generate: answer one prompt with a GRIT model (causal attention, chat format)."""

from __future__ import annotations

import sys

NAME = "generate"
HELP = "generate an answer to a prompt with a GRIT model"


def add_arguments(parser) -> None:
    parser.add_argument("prompt", help="the user message")
    parser.add_argument("--model", default=None,
                        help="model directory (Hugging Face format) or shipped model name (default: gritkit-smol where its base package is installed, else gritkit-tiny)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 decodes greedily")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--quantize", choices=["int8"], default=None,
                        help="int8: weights in 8 bits with a scale per output channel, multiplied in bfloat16 (faster decode, prefill and embedding; see docs/models.md)")
    parser.add_argument("--compile", nargs="?", const="exact", default=None, choices=["exact", "max-autotune"],
                        help="decode with a static cache and a torch.compile'd step: exact (the default; fp32 answers "
                             "are the eager ones) or max-autotune (faster GEMMs, minutes to compile the first time); "
                             "the first answer waits for the compile")


def run(args) -> int:
    import torch

    from ..model.gritlm import GritLM

    if args.seed is not None:
        torch.manual_seed(args.seed)
    from ..weights.shipped import default_model

    args.model = args.model or default_model(log=lambda note: print(f"gritkit: {note}", file=sys.stderr))
    model = GritLM.from_pretrained(args.model, device=args.device, dtype=args.dtype,
                                    quantize=args.quantize, compile=args.compile or False)
    sampling = dict(do_sample=True, temperature=args.temperature, top_p=args.top_p) if args.temperature > 0 else {}
    print(model.generate(args.prompt, max_new_tokens=args.max_new_tokens, **sampling))
    return 0
