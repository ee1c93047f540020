"""The model a run trains: loaded, built tiny, or resumed; with LoRA, checkpointing, sharding; its optimiser groups."""

from __future__ import annotations

from pathlib import Path

import torch

from ..parallel.distributed import Processes, shard_model
from .config import TrainConfig


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


def grit_settings(config: TrainConfig) -> dict:
    """The GritConfig fields a training config decides; the rest come from the model loaded."""
    # An empty query_instruction keeps the one the loaded model saved.
    return {"pooling": config.pooling, "attention": config.attention,
            **({"query_instruction": config.query_instruction} if config.query_instruction else {})}


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


def prepare_model(grit, config: TrainConfig, processes: Processes) -> list:
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


def use_bf16(config: TrainConfig, device: torch.device) -> bool:
    if config.bf16 != "auto":
        return config.bf16 == "true"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
