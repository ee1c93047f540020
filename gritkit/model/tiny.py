"""Tiny GRIT models built from scratch: a locally trained tokenizer plus a random decoder.

Nothing can be downloaded on the machines this project runs on, so tests, demos and from-scratch
training start here. ``build_tiny_model("llama", tokenizer)`` accepts every architecture of the
test matrix (llama, mistral, qwen2, qwen3, gemma, gpt2, mixtral).
"""

from __future__ import annotations

from typing import Iterable

import torch

from .formats import GRIT_CHAT_TEMPLATE
from .config import GritConfig
from .gritlm import GritLM

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
# The GRIT markers become single special tokens ("format efficiency", the paper's future work).
GRIT_MARKERS = ["<|user|>", "<|assistant|>", "<|embed|>"]
ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gpt2", "mixtral")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8192):
    """Train a byte-level BPE tokenizer on ``texts``; it adds BOS and knows the GRIT markers.

    Returns a transformers ``PreTrainedTokenizerFast`` with the GRIT chat template.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [PAD, BOS, EOS, UNK, *GRIT_MARKERS]
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   unk_token=UNK, extra_special_tokens=GRIT_MARKERS)
    fast.chat_template = GRIT_CHAT_TEMPLATE
    return fast


def tiny_config(architecture: str, vocab_size: int, hidden_size: int = 64, num_layers: int = 2,
                num_heads: int = 4, num_kv_heads: int = 2, max_positions: int = 2048, **overrides):
    """A small randomly initialisable config of ``architecture`` (a transformers model type)."""
    from transformers import AutoConfig

    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    common = dict(vocab_size=vocab_size, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True)
    if architecture == "gpt2":
        sizes = dict(n_embd=hidden_size, n_layer=num_layers, n_head=num_heads, n_positions=max_positions,
                     n_inner=4 * hidden_size)
    else:
        sizes = dict(hidden_size=hidden_size, intermediate_size=4 * hidden_size, num_hidden_layers=num_layers,
                     num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
                     head_dim=hidden_size // num_heads, max_position_embeddings=max_positions)
    if architecture == "mistral":
        sizes["sliding_window"] = max_positions // 2
    if architecture == "mixtral":
        sizes.update(num_local_experts=4, num_experts_per_tok=2)
    return AutoConfig.for_model(architecture, **{**common, **sizes, **overrides})


def build_tiny_model(architecture: str, tokenizer, seed: int = 0, config: GritConfig | None = None,
                     zero_residual: bool = False, **config_kwargs) -> GritLM:
    """A randomly initialised GritLM of ``architecture`` sized by ``config_kwargs`` (float32, CPU),
    embedding as ``config`` says (GRIT's defaults when None).

    ``zero_residual`` zeroes the output projection of every attention and MLP block, so that the
    untrained model is exactly the final norm of its token embeddings: mean-pooled, that is a
    random-projection bag of words, already a fair retriever, which contrastive training then
    refines instead of first having to undo random layers (see ``zero_residual_projections``).
    """
    from transformers import AutoModelForCausalLM

    hf_config = tiny_config(architecture, vocab_size=len(tokenizer), **config_kwargs)
    hf_config.bos_token_id, hf_config.eos_token_id, hf_config.pad_token_id = (
        tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    if zero_residual:
        zero_residual_projections(model)
    return GritLM(model, tokenizer, config)


# Parameter names of the projections that write a block's output back into the residual stream.
_RESIDUAL_OUTPUTS = (".o_proj.weight", ".down_proj.weight", ".c_proj.weight", ".w2.weight", "experts.down_proj")


def zero_residual_projections(model: torch.nn.Module) -> int:
    """Zero the residual-branch output projections of ``model``; returns how many were zeroed.

    Every block then starts as the identity (as in ReZero/SkipInit-style initialisations), while
    the other weights stay random so gradients flow into the blocks from the first step.
    """
    zeroed = 0
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(_RESIDUAL_OUTPUTS):
                parameter.zero_()
                zeroed += 1
    return zeroed


def sample_corpus() -> list[str]:
    """A few thousand lines of real English text that ship with Python: stdlib docstrings.

    Enough to train a small tokenizer for tests and demos without any download. Submodules are
    skipped: which of them a package holds as attributes depends on what the process imported
    before (``logging.config``, ``email.mime``...), and the corpus must not.
    """
    import importlib
    import types

    lines = []
    for name in ("argparse", "collections", "datetime", "email", "json", "logging", "os", "pathlib",
                 "random", "re", "socket", "string", "subprocess", "textwrap", "threading", "unittest"):
        module = importlib.import_module(name)
        for obj in [module, *(v for v in vars(module).values() if not isinstance(v, types.ModuleType))]:
            doc = getattr(obj, "__doc__", None)
            if isinstance(doc, str):
                lines.extend(line.strip() for line in doc.splitlines() if len(line.strip()) > 20)
    return sorted(set(lines))
