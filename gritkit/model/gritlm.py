"""GritLM: one Hugging Face decoder that embeds (bidirectional, pooled) and generates (causal).

    model = GritLM.from_pretrained("path/to/model")
    vectors = model.encode(["a text"], instruction="Retrieve passages that answer the question")
    answer = model.generate("What is GRIT?", max_new_tokens=32)

The mode is chosen per call: ``encode`` runs the decoder with transformers' per-call
``is_causal=False`` keyword, ``generate`` runs it as usual. No model file is copied or patched,
so every architecture transformers supports works, and a second copy of the weights is never made.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .config import GritConfig, field_names
from .formats import GritFormat, chat_prompt_ids, text_token_mask
from .pooling import pool
from .compiled_decode import CompiledDecode, compile_mode
from .int8_weights import check_quantization, quantization_of, quantize_weights
from .prepacked_linear import is_prepacked, prepack_linears, prepack_problem
from .threaded_gemv import thread_gemvs
from .saving import DEFAULT_MAX_SEQ_LENGTH, PROJECTION_NAME, check_model_files, prepare_tokenizer, save_model_dir



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
    is exactly the failure this guards against. Weights that are exactly zero (zero-initialised
    residual projections, used for training from scratch) hide the answer, so such a model is
    probed again with only those tensors filled with noise, then zeroed again: restoring them is
    exact and needs no copy of the model (on a 7B checkpoint a copy is the out-of-memory).
    """
    if _sees_later_token(model):
        return
    with torch.no_grad():
        zeros = [p for p in model.parameters() if p.is_floating_point() and not p.any()]
        try:
            for parameter in zeros:
                parameter.normal_(0.0, 0.02)
            sees = _sees_later_token(model)
        finally:
            for parameter in zeros:
                parameter.zero_()
    if not sees:
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


def _wants_prepack(prepack: bool | str, device: torch.device, dtype, quantize: str | None,
                   compile: bool | str) -> bool:
    """Whether ``from_pretrained``'s ``prepack`` argument prepacks this model; ValueError when
    ``prepack=True`` cannot go with the device, dtype or other loading options."""
    if prepack == "auto":
        return (not quantize and not compile_mode(compile) and dtype != "auto"
                and prepack_problem(device, dtype) is None)
    if prepack not in (True, False):
        raise ValueError(f"prepack must be False, True or 'auto', got {prepack!r}")
    if not prepack:
        return False
    if quantize:
        raise ValueError("prepack and quantize are alternatives: int8 layers have kernels of their own")
    if compile_mode(compile):
        raise ValueError("prepack cannot go with compile: inductor cannot lower oneDNN-reordered weights "
                         "(compile='max-autotune' reorders frozen weights itself)")
    problem = prepack_problem(device, torch.float32 if dtype == "auto" else dtype)  # "auto": checked once loaded
    if problem:
        raise ValueError(problem)
    return True


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


def _reject_unknown(method: str, unknown: dict, accepted: Sequence[str]) -> None:
    """TypeError naming the keywords ``method`` accepts, with a hint for sentence-transformers' ones."""
    if not unknown:
        return
    names = ", ".join(sorted(unknown))
    hint = ""
    if {"prompt", "prompt_name"} & set(unknown):
        hint = " (a GRIT model takes the instruction itself, instruction=..., and formats it)"
    raise TypeError(f"{method}() got unknown keyword(s) {names}{hint}; it accepts {', '.join(accepted)}")


ENCODE_KEYWORDS = ("instruction", "batch_size", "max_length", "normalize_embeddings", "convert_to_tensor",
                   "show_progress_bar", "truncate_dim", "precision", "int8_ranges", "max_batch_tokens")
# Padded tokens per encode batch on a CPU: there a forward pass over fewer, similar-length texts pads
# less and keeps its activations in cache (benchmarks/README.md#encoding-benchmarksencodepy).
CPU_BATCH_TOKENS = 2048


def length_batches(lengths: Sequence[int], batch_size: int, max_tokens: int = 0) -> list[list[int]]:
    """Indices of ``lengths`` grouped longest first into batches of at most ``batch_size`` and, when
    ``max_tokens`` > 0, at most ``max_tokens`` padded tokens (texts x the longest; a text longer
    than that still gets a batch of its own)."""
    batches: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        current = batches[-1] if batches else None
        full = current is None or len(current) >= batch_size or (
            max_tokens > 0 and (len(current) + 1) * lengths[current[0]] > max_tokens)
        if full:
            batches.append([index])
        else:
            current.append(index)
    return batches


class GritLM:
    """A decoder language model used for both embedding and generation.

    Args:
        model: a transformers causal LM (``AutoModelForCausalLM``), optionally PEFT-wrapped.
        tokenizer: its fast tokenizer (character offsets are needed to find the text tokens).
        config: how it embeds (pooling, attention, format, projection size, default
            instructions); see ``GritConfig``. Defaults to GRIT's: bidirectional, mean pooling.
        projection_head: the ``torch.nn.Linear`` to apply to pooled vectors when
            ``config.projection`` is set; a new one is initialised when none is given.
        check_bidirectional: probe once that per-call bidirectional attention works.
        max_seq_length: tokens an embedding input is cut to when ``encode`` is given no
            ``max_length`` (instruction and format included).
        compile: False, True or ``"max-autotune"``: ``generate`` decodes with a static cache
            and a compiled step (see ``from_pretrained``); a model using ``sdpa`` attention is
            switched to its grouped one-token variant (``gritkit.model.grouped_attention``).
    """

    def __init__(self, model, tokenizer, config: GritConfig | None = None,
                 projection_head: torch.nn.Linear | None = None, check_bidirectional: bool = True,
                 max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH, compile: bool | str = False):
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError("GritLM needs a fast (Rust) tokenizer: pooled tokens are found from character offsets")
        config = config if config is not None else GritConfig()
        if not isinstance(config, GritConfig):
            raise TypeError(f"config must be a GritConfig, got {type(config).__name__}")
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.projection_head = _projection_head(config, projection_head, model)
        self.max_seq_length = max_seq_length
        prepare_tokenizer(tokenizer)
        thread_gemvs(model)  # one-token decode steps on every CPU thread, bitwise the same result
        mode = compile_mode(compile)
        self.compiled_decode = CompiledDecode(model, mode) if mode else None
        if config.special_markers:
            from .compact_format import check_special_markers

            check_special_markers(tokenizer, config.special_markers)
        if check_bidirectional and config.attention == "bidirectional":
            check_bidirectional_attention(model)

    # Read-only views of the config: settings change only through a new GritConfig.
    @property
    def pooling(self) -> str:
        return self.config.pooling

    @property
    def attention(self) -> str:
        return self.config.attention

    @property
    def format(self) -> GritFormat:
        return self.config.format

    def with_config(self, **changes) -> "GritLM":
        """The same weights (not copied) with other settings, e.g. ``with_config(pooling="cls")``."""
        config = self.config.replace(**changes)
        if config.projection != self.config.projection:
            raise ValueError("with_config cannot change projection: the head is weights; load or build a model with it")
        clone = GritLM(self.model, self.tokenizer, config, self.projection_head, check_bidirectional=False,
                       max_seq_length=self.max_seq_length)
        clone.compiled_decode = self.compiled_decode  # the same compiled steps and caches
        return clone

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike = "gritkit-tiny", dtype=None, device=None,
                        config: GritConfig | None = None, attn_implementation: str | None = None,
                        model_kwargs: dict | None = None, quantize: str | None = None, compile: bool | str = False,
                        prepack: bool | str = False, **overrides) -> "GritLM":
        """Load a model directory in Hugging Face format from local disk, or a shipped model by
        name (default: ``"gritkit-tiny"``, inside the package; see ``gritkit.weights.shipped``).

        ``dtype`` None means bfloat16 on a GPU that has it, float32 otherwise. The GRIT settings
        are the saved ``gritkit_config.json`` (GRIT's defaults for a plain HF checkpoint), or
        ``config`` when given, with ``overrides`` (GritConfig fields: ``pooling="last_token"``,
        ``projection=256``...) applied on top. A ``projection`` size the checkpoint has no head
        for adds a new linear head. ``model_kwargs`` go to ``AutoModelForCausalLM.from_pretrained``.

        Speed (inference only; measured in ``docs/models.md``): ``quantize="int8"`` stores every
        linear layer's weights in int8 with a scale per output channel and multiplies in bfloat16
        (``gritkit.model.int8_weights``); ``compile=True`` makes ``generate`` decode with a static
        KV cache and a ``torch.compile``d step whose fp32 greedy answers are the eager ones, and
        ``compile="max-autotune"`` with inductor's own GEMMs on frozen weights (faster, not
        bitwise; see ``gritkit.model.compiled_decode``). The first call of each cache size
        compiles: tens of seconds on a CPU, minutes for max-autotune the first time.
        ``prepack=True`` (CPU, float32 or bfloat16) reorders every linear layer's weights once for
        oneDNN's kernels: a batch of decode steps (the server's) ~2x faster in fp32, prefill and
        embedding a little faster, outputs equal to float rounding; not with ``quantize`` or
        ``compile`` (``gritkit.model.prepacked_linear``). ``prepack="auto"`` prepacks where it
        can (a CPU model in float32, or bfloat16 on a CPU with its instructions, without
        ``quantize`` or ``compile``) and loads plainly elsewhere: ``gritkit serve``'s default.
        """
        from transformers import AutoModelForCausalLM

        from ..weights.shipped import resolve_model_dir

        unknown = set(overrides) - set(field_names())
        if unknown:
            raise TypeError(f"from_pretrained() got unknown keyword(s) {', '.join(sorted(unknown))}; GRIT settings "
                            f"are {', '.join(field_names())} (model loading options go in model_kwargs=)")
        path = resolve_model_dir(path)
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} is not a Hugging Face model directory (no config.json)")
        check_model_files(path)
        saved = GritConfig.load(path)
        grit_config = (config if config is not None else saved).replace(**overrides)
        device = _resolve_device(device)
        kwargs = dict(model_kwargs or {})
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        check_quantization(quantize)  # before the weights are read
        dtype = _resolve_dtype(dtype, device)
        prepack = _wants_prepack(prepack, device, dtype, quantize, compile)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs).to(device)
        model.eval()
        if quantize:
            quantize_weights(model, quantize)
        if prepack:
            model.requires_grad_(False)  # inference only: nothing could train the reordered weights
            prepack_linears(model)
        tokenizer = _load_tokenizer(path)
        head = _load_projection(path, model, grit_config.projection, device)
        return cls(model, tokenizer, grit_config, projection_head=head, compile=compile)

    def save_pretrained(self, path: str | os.PathLike, state_dict: dict | None = None, also=None,
                        overwrite: bool = False) -> Path:
        """Write safetensors weights, tokenizer (with chat template), the whole GritConfig, and the
        files that make ``sentence_transformers.SentenceTransformer(path)`` give ``encode``'s
        vectors (see ``gritkit.model.st_export``), atomically (``gritkit.model.saving``).

        An existing model directory at ``path`` is replaced; a directory holding anything else
        (a user's other files) only with ``overwrite``, else FileExistsError before anything is
        written. ``state_dict`` replaces the model's own weights (a trainer passes weights
        gathered from shards or LoRA-merged); ``also(directory)`` writes more into
        ``path/adapter`` before the directory is renamed into place (a LoRA adapter).
        """
        quantization = quantization_of(self.model)
        if state_dict is None and quantization:
            raise ValueError(f"this model's weights are quantized ({quantization}), a loading option "
                             "for inference: load it without quantize= to save it")
        if state_dict is None and is_prepacked(self.model):
            raise ValueError("this model's linear layers are prepacked for oneDNN, a loading option for inference: "
                             "load it without prepack= to save it")
        return save_model_dir(path, self.model, self.tokenizer, self.config, self.max_seq_length,
                              self.projection_head, state_dict=state_dict, also=also, overwrite=overwrite)

    # ------------------------------------------------------------------ embedding
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def embedding_dim(self) -> int:
        """Length of the vectors ``encode`` returns."""
        if self.projection_head is not None:
            return self.projection_head.out_features
        return self.model.config.get_text_config().hidden_size

    def get_sentence_embedding_dimension(self) -> int:
        """``embedding_dim``, under the name sentence-transformers users know."""
        return self.embedding_dim

    def tokenize_for_embedding(self, texts: Sequence[str], instructions: Sequence[str], max_length: int | None = None
                               ) -> list[tuple[list[int], list[bool]]]:
        """Token ids and pool mask of each formatted text, truncated to ``max_length`` tokens
        (``max_seq_length`` when None).

        Truncation cuts the end of the text, so the instruction is always kept. An empty text
        pools over the whole formatted input (format and instruction), so it still gets a
        well-defined vector.
        """
        max_length = self.max_seq_length if max_length is None else max_length
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

    def pool_hidden(self, hidden: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
        """Pooled (and projected) vectors (batch, dim) of a decoder's last hidden states."""
        return self.project(pool(hidden, pool_mask, self.pooling))

    def embed(self, batch: EmbeddingBatch) -> torch.Tensor:
        """Differentiable embeddings (batch, dim), float32, not normalised.

        The decoder runs with bidirectional attention for this call only (causal when the
        config says ``attention="causal"``); padding stays masked.
        """
        batch = batch.to(self.device)
        hidden = decoder_of(self.model)(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                        is_causal=self.attention == "causal", use_cache=False).last_hidden_state
        return self.pool_hidden(hidden, batch.pool_mask)

    def pack(self, items: Sequence[tuple[list[int], list[bool]]], capacity: int):
        """Tokenised embedding items packed into rows of ``capacity`` tokens (see gritkit.model.packing),
        each attending inside itself as ``config.attention`` says."""
        from .packing import pack

        return pack(items, self.tokenizer.pad_token_id, capacity, causal=self.attention == "causal")

    def embed_packed(self, batch) -> torch.Tensor:
        """``embed`` of a PackedBatch: one vector per packed item, in item order, each equal to
        the item's vector alone (to float rounding)."""
        from .packing import packed_forward, pool_segments

        batch = batch.to(self.device)
        hidden = packed_forward(decoder_of(self.model), self.model.config, batch).last_hidden_state
        return self.project(pool_segments(hidden, batch, range(len(batch.segments)), self.pooling))

    def project(self, vectors: torch.Tensor) -> torch.Tensor:
        """Pooled vectors through the projection head, when the model has one."""
        return self.projection_head(vectors) if self.projection_head is not None else vectors

    def encode(self, texts: str | Sequence[str], instruction: str = "", batch_size: int = 32,
               max_length: int | None = None, normalize_embeddings: bool = True, convert_to_tensor: bool = False,
               show_progress_bar: bool | None = None, truncate_dim: int | None = None, precision: str = "float32",
               int8_ranges=None, max_batch_tokens: int | None = None, **unknown):
        """Embed ``texts`` (one str, or a list) after ``instruction``; float32, in input order.

        Returns a numpy array (a torch tensor with ``convert_to_tensor``) of shape (n, dim), or
        (dim,) for a single str; unit length unless ``normalize_embeddings=False``. Texts are
        sorted by token length into batches so that little padding is computed; ``max_length``
        None means ``max_seq_length``. ``show_progress_bar`` None shows one for more than 4
        batches on a tty. ``truncate_dim`` keeps the first that many dimensions of each vector
        (before normalising, so truncated vectors are unit length too), as Matryoshka models allow.
        ``precision`` ``int8``, ``uint8``, ``binary`` or ``ubinary`` returns compact numpy vectors
        (see ``gritkit.model.quantize``); 8-bit levels use ``int8_ranges`` ((2, dim) per-dimension min
        and max, from ``gritkit.model.quantize.int8_ranges`` of a corpus sample) or, without them, the
        range of these very vectors, so give queries and documents the same ranges.
        ``max_batch_tokens`` caps a batch's padded tokens (texts x its longest) below ``batch_size``
        texts; None: ``CPU_BATCH_TOKENS`` on a CPU, where smaller batches of similar lengths encode
        faster, and no cap on other devices; 0: no cap. Vectors do not depend on the batching.
        """
        _reject_unknown("encode", unknown, ENCODE_KEYWORDS)
        single = isinstance(texts, str)
        texts = _check_texts([texts] if single else texts)
        if not isinstance(instruction, str):
            raise TypeError(f"instruction must be a str, got {type(instruction).__name__}")
        max_length = self.max_seq_length if max_length is None else max_length
        if batch_size < 1 or max_length < 1:
            raise ValueError("batch_size and max_length must be positive")
        if max_batch_tokens is None:
            max_batch_tokens = CPU_BATCH_TOKENS if self.device.type == "cpu" else 0
        if not isinstance(max_batch_tokens, int) or isinstance(max_batch_tokens, bool) or max_batch_tokens < 0:
            raise ValueError(f"max_batch_tokens must be an int >= 0 (0: no cap), got {max_batch_tokens!r}")
        from .quantize import PRECISIONS

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        dim = self.embedding_dim if truncate_dim is None else truncate_dim
        if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= self.embedding_dim:
            raise ValueError(f"truncate_dim must be an int from 1 to {self.embedding_dim}, got {truncate_dim!r}")
        vectors = torch.empty((len(texts), dim), dtype=torch.float32)
        items = self.tokenize_for_embedding(texts, [instruction] * len(texts), max_length)
        batches = length_batches([len(ids) for ids, _ in items], batch_size, max_batch_tokens)
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
                    out = self.embed(self.collate([items[i] for i in indices]))[:, :dim]
                    if normalize_embeddings:
                        out = torch.nn.functional.normalize(out, dim=-1)
                    vectors[indices] = out.float().cpu()
        finally:
            self.model.train(was_training)
        if precision != "float32":  # numpy, whatever convert_to_tensor says: torch has no packed bits
            from .quantize import quantize

            compact = quantize(vectors.numpy(), precision, int8_ranges)
            return compact[0] if single else compact
        result = vectors[0] if single else vectors
        return result if convert_to_tensor else result.numpy()

    def encode_query(self, texts: str | Sequence[str], instruction: str | None = None, **kwargs):
        """Embed search queries after ``instruction``, or ``config.default_query_instruction`` (the
        saved one, else ``FALLBACK_QUERY_INSTRUCTION``)."""
        instruction = self.config.default_query_instruction if instruction is None else instruction
        return self.encode(texts, instruction=instruction, **kwargs)

    def encode_document(self, texts: str | Sequence[str], instruction: str | None = None, **kwargs):
        """Embed documents after ``config.document_instruction`` (GRIT: none) unless told otherwise."""
        instruction = self.config.document_instruction if instruction is None else instruction
        return self.encode(texts, instruction=instruction, **kwargs)

    @staticmethod
    def similarity(a, b):
        """Cosine similarities (n, m) of two sets of embeddings (arrays, tensors, or single vectors).

        Returns a torch tensor when either input is one, else a numpy array.
        """
        as_tensor = isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor)
        x, y = (torch.as_tensor(v, dtype=torch.float32) for v in (a, b))
        x, y = (v[None] if v.ndim == 1 else v for v in (x, y))
        if x.shape[-1] != y.shape[-1]:
            raise ValueError(f"embeddings of dimension {x.shape[-1]} and {y.shape[-1]} cannot be compared")
        scores = torch.nn.functional.normalize(x, dim=-1) @ torch.nn.functional.normalize(y, dim=-1).T
        return scores if as_tensor else scores.numpy()

    # ------------------------------------------------------------------ generation
    def chat_input_ids(self, messages: str | list[dict]) -> list[int]:
        """Token ids of a chat (or one user prompt) ending with the assistant's turn marker."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise TypeError("a prompt is a str or a list of {'role': ..., 'content': ...} messages")
        return chat_prompt_ids(self.tokenizer, messages)

    def generate(self, prompt: str | list[dict] | list, max_new_tokens: int = 256, **generation_kwargs):
        """Generate the assistant's answer with causal attention; returns the new text.

        ``prompt`` is a user message, a list of chat messages, or a list of either (then a list
        of answers is returned, generated as one left-padded batch). Decoding is greedy unless
        sampling arguments (``do_sample=True``, ``temperature``...) are given; they go to
        transformers' ``generate``.
        """
        single = isinstance(prompt, str) or (isinstance(prompt, list) and prompt and isinstance(prompt[0], dict))
        prompts = [prompt] if single else list(prompt)
        sequences = [self.chat_input_ids(p) for p in prompts]
        width = max(len(s) for s in sequences)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in sequences], device=self.device)
        attention = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=self.device)
        output = self.generate_ids(input_ids, attention, max_new_tokens, **generation_kwargs)
        answers = self.tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
        return answers[0] if single else answers

    def generate_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                     cache=None, **generation_kwargs) -> torch.Tensor:
        """transformers' ``generate`` output (prompt and new ids) for left-padded ``input_ids``,
        greedy unless told otherwise, through the compiled step when the model was loaded with
        ``compile``. ``cache``: a transformers cache holding the keys/values of the first tokens
        (a RAG doc cache), which generation continues from."""
        generation_kwargs.setdefault("do_sample", False)
        generation_kwargs.update(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                                 pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id)
        with torch.inference_mode():
            if self.compiled_decode is None:
                if cache is not None:
                    generation_kwargs["cache"] = cache
                return self.model.generate(**generation_kwargs)
            batch, width = input_ids.shape
            return self.compiled_decode.generate(self.model.generate, batch, width + max_new_tokens, prefix=cache,
                                                 **generation_kwargs)

    def chat(self, messages: list[dict], max_new_tokens: int = 256, **generation_kwargs) -> str:
        """Continue a conversation (a list of user/assistant messages) with the assistant's answer."""
        return self.generate(messages, max_new_tokens=max_new_tokens, **generation_kwargs)


def _projection_head(config: GritConfig, head: torch.nn.Linear | None, model) -> torch.nn.Linear | None:
    """The head ``config.projection`` asks for: ``head`` checked against it, or a new one."""
    if config.projection is None:
        if head is not None:
            raise ValueError("a projection_head was given but config.projection is None; set it to the head's size")
        return None
    if head is None:
        hidden = model.config.get_text_config().hidden_size
        return torch.nn.Linear(hidden, config.projection).to(next(model.parameters()).device)
    if head.out_features != config.projection:
        raise ValueError(f"projection_head has {head.out_features} outputs, config.projection is {config.projection}")
    return head


def _load_tokenizer(path: Path):
    """The tokenizer of model directory ``path``; a failure names the file that made it, since
    transformers' own errors (a JSON error, "install sentencepiece") name no file."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (ValueError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if (path / "tokenizer.json").is_file():
            raise ValueError(f"{path / 'tokenizer.json'} cannot be read ({reason}); re-save or re-download "
                             "the model") from None
        raise ValueError(f"{path} has no tokenizer.json, and its other tokenizer files do not make a fast "
                         f"tokenizer ({reason})") from None


def _load_projection(path: Path, model, projection: int | None, device) -> torch.nn.Linear | None:
    """The saved head of ``path`` (checked against ``projection``), or None to let GritLM make one."""
    if not (path / PROJECTION_NAME).is_file():
        return None
    from safetensors.torch import load_file

    state = load_file(str(path / PROJECTION_NAME))
    head = torch.nn.Linear(model.config.get_text_config().hidden_size, state["weight"].shape[0])
    head.load_state_dict(state)
    if projection != head.out_features:
        raise ValueError(f"{path} has a projection head to {head.out_features} dims, but the config asks for "
                         f"{projection}")
    return head.to(device)

