"""GritLM: one Hugging Face decoder that embeds (bidirectional, pooled) and generates (causal).

    model = GritLM.from_pretrained("path/to/model")
    vectors = model.encode(["a text"], instruction="Retrieve passages that answer the question")
    answer = model.generate("What is GRIT?", max_new_tokens=32)

The mode is chosen per call: ``encode`` runs the decoder with transformers' per-call
``is_causal=False`` keyword, ``generate`` runs it as usual. No model file is copied or patched,
so every architecture transformers supports works, and a second copy of the weights is never made.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .formats import GRIT_CHAT_TEMPLATE, GritFormat, text_token_mask
from .pooling import check_pooling, pool

CONFIG_NAME = "gritkit_config.json"
ATTENTIONS = ("bidirectional", "causal")
PROJECTION_NAME = "projection.safetensors"


class BidirectionalAttentionError(RuntimeError):
    """The installed transformers cannot run this decoder bidirectionally per call."""


@dataclass
class EmbeddingBatch:
    """Right-padded token ids of formatted embedding inputs; ``pool_mask`` marks the text."""

    input_ids: torch.Tensor  # (batch, tokens)
    attention_mask: torch.Tensor  # (batch, tokens), 1 on real tokens
    pool_mask: torch.Tensor  # (batch, tokens), 1 on the tokens that are pooled

    def to(self, device) -> "EmbeddingBatch":
        return EmbeddingBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.pool_mask)))


def right_pad(items: Sequence[tuple[list[int], list[bool]]], pad_id: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, mask) tensors of right-padded (ids, per-token flag) items."""
    width = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(items), width), dtype=torch.long)
    flags = torch.zeros((len(items), width), dtype=torch.long)
    for row, (ids, mask) in enumerate(items):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        flags[row, : len(ids)] = torch.tensor(mask, dtype=torch.long)
    return input_ids, attention, flags


def decoder_of(model: torch.nn.Module) -> torch.nn.Module:
    """The transformer body of a causal LM (no LM head), also through a PEFT wrapper.

    Embedding needs only the last hidden states; skipping the LM head saves its
    (tokens x vocabulary) matmul, which dominates small models.
    """
    if hasattr(model, "get_base_model"):  # peft.PeftModel: LoRA layers live inside the base model
        model = model.get_base_model()
    return model.base_model


def check_bidirectional_attention(model: torch.nn.Module) -> None:
    """Raise BidirectionalAttentionError unless ``is_causal=False`` makes attention bidirectional.

    Probe: with bidirectional attention the state just before the last token must change when
    the last token changes (the neighbour, so that a sliding window cannot hide it). A
    transformers version that ignores the keyword would silently give causal embeddings, which
    is exactly the failure this guards against. Weights whose attention output is exactly zero
    (zero-initialised residual projections, used for training from scratch) hide the answer, so
    such a model is probed again through a copy with its weights perturbed.
    """
    if not _sees_later_token(model):
        import copy

        noisy = copy.deepcopy(model)
        with torch.no_grad():
            for parameter in noisy.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.02)
        if not _sees_later_token(noisy):
            raise BidirectionalAttentionError(_bidirectional_message(model))


def _sees_later_token(model: torch.nn.Module) -> bool:
    decoder = decoder_of(model)
    vocab = model.config.get_text_config().vocab_size
    device = next(model.parameters()).device
    probes = [torch.tensor([[1, 2, 3, 4]]) % vocab, torch.tensor([[1, 2, 3, 5]]) % vocab]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            states = [decoder(input_ids=p.to(device), is_causal=False, use_cache=False).last_hidden_state for p in probes]
    except TypeError as exc:
        raise BidirectionalAttentionError(_bidirectional_message(model)) from exc
    finally:
        model.train(was_training)
    first, second = states[0][0, -2].float(), states[1][0, -2].float()
    return bool((first - second).abs().max() > 1e-4 * first.abs().max().clamp(min=1e-6))


def _bidirectional_message(model: torch.nn.Module) -> str:
    import transformers

    return (
        f"transformers {transformers.__version__} does not run {type(model).__name__} with bidirectional "
        "attention per call (model(..., is_causal=False)); GRIT embeddings need it. Install "
        "transformers>=5.2 or use an architecture whose attention honours is_causal."
    )


def _resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _resolve_dtype(dtype, device: torch.device):
    if dtype is None:
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if isinstance(dtype, str):
        if dtype == "auto":
            return "auto"
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use e.g. float32, bfloat16, float16 or auto")
        return getattr(torch, dtype)
    return dtype


def _check_texts(texts) -> list[str]:
    if not isinstance(texts, (list, tuple)):
        raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
    return list(texts)


class GritLM:
    """A decoder language model used for both embedding and generation.

    Args:
        model: a transformers causal LM (``AutoModelForCausalLM``), optionally PEFT-wrapped.
        tokenizer: its fast tokenizer (character offsets are needed to find the text tokens).
        pooling: one of ``mean`` (default), ``weighted_mean``, ``last_token``, ``cls``.
        projection: optional ``torch.nn.Linear`` applied to the pooled vector.
        fmt: the embedding prompt format.
        check_bidirectional: probe once that per-call bidirectional attention works.
        attention: ``bidirectional`` (GRIT) or ``causal`` embeddings; causal exists for the
            ablation of the paper's choice (causal attention with last-token pooling).
    """

    def __init__(self, model, tokenizer, pooling: str = "mean", projection: torch.nn.Linear | None = None,
                 fmt: GritFormat | None = None, check_bidirectional: bool = True, attention: str = "bidirectional"):
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError("GritLM needs a fast (Rust) tokenizer: pooled tokens are found from character offsets")
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = check_pooling(pooling)
        self.projection = projection
        self.format = fmt or GritFormat()
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTIONS)}, got {attention!r}")
        self.attention = attention
        if tokenizer.chat_template is None:
            tokenizer.chat_template = GRIT_CHAT_TEMPLATE
        if tokenizer.pad_token_id is None:
            # Padding is always masked out; any id will do, and EOS is the usual choice.
            tokenizer.pad_token = tokenizer.eos_token
        if check_bidirectional and attention == "bidirectional":
            check_bidirectional_attention(model)

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike = "gritkit-tiny", dtype=None, device=None,
                        pooling: str | None = None, projection: int | None = None, attn_implementation: str | None = None,
                        **model_kwargs) -> "GritLM":
        """Load a model directory in Hugging Face format from local disk, or a shipped model by
        name (default: ``"gritkit-tiny"``, inside the package; see ``gritkit.models``).

        ``dtype`` None means bfloat16 on a GPU that has it, float32 otherwise; ``pooling`` None
        means the saved gritkit config's pooling, or mean for a plain HF checkpoint;
        ``projection`` (an output size) adds a new linear head when the checkpoint has none.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .models import resolve_model_dir

        path = resolve_model_dir(path)
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} is not a Hugging Face model directory (no config.json)")
        saved = json.loads((path / CONFIG_NAME).read_text()) if (path / CONFIG_NAME).is_file() else {}
        device = _resolve_device(device)
        kwargs = dict(model_kwargs)
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        model = AutoModelForCausalLM.from_pretrained(path, dtype=_resolve_dtype(dtype, device), **kwargs).to(device)
        model.eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        head = _load_projection(path, model, projection, device)
        fmt = GritFormat.from_dict(saved["format"]) if "format" in saved else None
        return cls(model, tokenizer, pooling=pooling or saved.get("pooling", "mean"), projection=head, fmt=fmt,
                   attention=saved.get("attention", "bidirectional"))

    def save_pretrained(self, path: str | os.PathLike, state_dict: dict | None = None) -> Path:
        """Write safetensors weights, tokenizer (with chat template) and gritkit config.

        Written into a temporary sibling directory and renamed into place, so an interrupted save
        never leaves a half-written model where a complete one was. ``state_dict`` replaces the
        model's own weights (a trainer passes weights gathered from shards or LoRA-merged).
        """
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp, state_dict=state_dict)
        self.tokenizer.save_pretrained(tmp)
        config = {"pooling": self.pooling, "attention": self.attention, "format": self.format.to_dict(),
                  "projection": self.projection.out_features if self.projection is not None else None}
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        if self.projection is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.projection.state_dict().items()},
                      str(tmp / PROJECTION_NAME))
        _replace_dir(tmp, path)
        return path

    # ------------------------------------------------------------------ embedding
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize_for_embedding(self, texts: Sequence[str], instructions: Sequence[str], max_length: int = 512
                               ) -> list[tuple[list[int], list[bool]]]:
        """Token ids and pool mask of each formatted text, truncated to ``max_length`` tokens.

        Truncation cuts the end of the text, so the instruction is always kept. An empty text
        pools over the whole formatted input (format and instruction), so it still gets a
        well-defined vector.
        """
        prompts, starts = zip(*(self.format.embedding_prompt(t, i) for t, i in zip(texts, instructions))) if texts else ((), ())
        if not prompts:
            return []
        encoded = self.tokenizer(list(prompts), return_offsets_mapping=True, truncation=True,
                                 max_length=max_length, add_special_tokens=True)
        items = []
        for index, (ids, offsets, start, text) in enumerate(zip(encoded["input_ids"], encoded["offset_mapping"], starts, texts)):
            mask = text_token_mask(offsets, start)
            if not any(mask):
                if text:
                    raise ValueError(f"texts[{index}]: instruction and format fill max_length={max_length} "
                                     "tokens and leave no room for the text; raise max_length or shorten the instruction")
                mask = [True] * len(ids)
            items.append((ids, mask))
        return items

    def collate(self, items: Sequence[tuple[list[int], list[bool]]]) -> EmbeddingBatch:
        """Right-pad tokenised items into one batch (right padding keeps positions 0..n-1)."""
        return EmbeddingBatch(*right_pad(items, self.tokenizer.pad_token_id))

    def embed(self, batch: EmbeddingBatch) -> torch.Tensor:
        """Differentiable embeddings (batch, dim), float32, not normalised.

        The decoder runs with bidirectional attention for this call only (unless the model was
        made with ``attention="causal"``); padding stays masked.
        """
        batch = batch.to(self.device)
        hidden = decoder_of(self.model)(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                        is_causal=self.attention == "causal", use_cache=False).last_hidden_state
        vectors = pool(hidden, batch.pool_mask, self.pooling)
        if self.projection is not None:
            vectors = self.projection(vectors)
        return vectors

    def encode(self, texts: str | Sequence[str], instruction: str = "", batch_size: int = 32, max_length: int = 512,
               normalize: bool = True, convert_to_tensor: bool = False, show_progress_bar: bool | None = None):
        """Embed ``texts`` (one str, or a list) after ``instruction``; float32, in input order.

        Returns a numpy array (a torch tensor with ``convert_to_tensor``) of shape (n, dim), or
        (dim,) for a single str. Texts are sorted by token length into batches so that little
        padding is computed. ``show_progress_bar`` None shows one for more than 4 batches on a tty.
        """
        single = isinstance(texts, str)
        texts = _check_texts([texts] if single else texts)
        if not isinstance(instruction, str):
            raise TypeError(f"instruction must be a str, got {type(instruction).__name__}")
        if batch_size < 1 or max_length < 1:
            raise ValueError("batch_size and max_length must be positive")
        dim = self.projection.out_features if self.projection is not None else self.model.config.get_text_config().hidden_size
        vectors = torch.empty((len(texts), dim), dtype=torch.float32)
        items = self.tokenize_for_embedding(texts, [instruction] * len(texts), max_length)
        order = sorted(range(len(items)), key=lambda i: -len(items[i][0]))
        batches = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
        from tqdm.auto import tqdm

        if show_progress_bar is None:
            disable = None if len(batches) > 4 else True  # None: tqdm shows it only on a tty
        else:
            disable = not show_progress_bar
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for indices in tqdm(batches, desc="encode", unit="batch", disable=disable):
                    out = self.embed(self.collate([items[i] for i in indices]))
                    if normalize:
                        out = torch.nn.functional.normalize(out, dim=-1)
                    vectors[indices] = out.float().cpu()
        finally:
            self.model.train(was_training)
        result = vectors[0] if single else vectors
        return result if convert_to_tensor else result.numpy()

    def encode_queries(self, texts: str | Sequence[str], instruction: str = "", **kwargs):
        """Embed search queries, usually with an instruction describing the task."""
        return self.encode(texts, instruction=instruction, **kwargs)

    def encode_documents(self, texts: str | Sequence[str], **kwargs):
        """Embed documents; GRIT embeds documents without an instruction."""
        return self.encode(texts, instruction="", **kwargs)

    # ------------------------------------------------------------------ generation
    def chat_input_ids(self, messages: str | list[dict]) -> list[int]:
        """Token ids of a chat (or one user prompt) ending with the assistant's turn marker."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise TypeError("a prompt is a str or a list of {'role': ..., 'content': ...} messages")
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # The template writes BOS itself, so the tokenizer must not add another.
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def generate(self, prompt: str | list[dict] | list, max_new_tokens: int = 256, **generation_kwargs):
        """Generate the assistant's answer with causal attention; returns the new text.

        ``prompt`` is a user message, a list of chat messages, or a list of either (then a list
        of answers is returned, generated as one left-padded batch). Decoding is greedy unless
        sampling arguments (``do_sample=True``, ``temperature``...) are given.
        """
        single = isinstance(prompt, str) or (isinstance(prompt, list) and prompt and isinstance(prompt[0], dict))
        prompts = [prompt] if single else list(prompt)
        sequences = [self.chat_input_ids(p) for p in prompts]
        width = max(len(s) for s in sequences)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in sequences], device=self.device)
        attention = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=self.device)
        generation_kwargs.setdefault("do_sample", False)
        with torch.inference_mode():
            output = self.model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=max_new_tokens,
                                         pad_token_id=pad, eos_token_id=self.tokenizer.eos_token_id,
                                         **generation_kwargs)
        answers = self.tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
        return answers[0] if single else answers

    def chat(self, messages: list[dict], max_new_tokens: int = 256, **generation_kwargs) -> str:
        """Continue a conversation (a list of user/assistant messages) with the assistant's answer."""
        return self.generate(messages, max_new_tokens=max_new_tokens, **generation_kwargs)


def _load_projection(path: Path, model, projection: int | None, device) -> torch.nn.Linear | None:
    hidden = model.config.get_text_config().hidden_size
    if (path / PROJECTION_NAME).is_file():
        from safetensors.torch import load_file

        state = load_file(str(path / PROJECTION_NAME))
        head = torch.nn.Linear(hidden, state["weight"].shape[0])
        head.load_state_dict(state)
        if projection is not None and projection != head.out_features:
            raise ValueError(f"{path} has a projection to {head.out_features} dims, not {projection}")
        return head.to(device)
    return torch.nn.Linear(hidden, projection).to(device) if projection else None


def _replace_dir(new: Path, target: Path) -> None:
    """Move directory ``new`` to ``target``, replacing an existing one with two renames."""
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)

