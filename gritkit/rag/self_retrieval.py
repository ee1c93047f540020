"""The model decides when to retrieve: generate; on the retrieval marker, search and continue.

    rag = RagPipeline.load("my-index")                    # an index built with --cache-docs
    result = rag.chat([{"role": "user", "content": "How do I stop a Perl script?"}])
    result.answer, [(r.document.id, r.source) for r in result.retrievals]

A model trained for it (``gritkit data self-retrieval``; ``configs/gritkit-smol-retrieve.yaml``)
starts its answer with ``RETRIEVAL_MARKER`` when the request needs a document. The loop decodes
token by token; when the text generated since the last splice contains the marker it

1. embeds the request (the last user message) with the same model, as the RAG modes embed a
   question (``Retriever.embed_query``: bidirectional, the index's query instruction), and takes
   the best documents not used yet;
2. closes the assistant turn (the chat template's own end of turn), then places each document
   exactly where training put it, as a user turn: from the index's doc cache when there is one
   (the keys/values of the document's embedding pass, re-rotated to their true positions, so the
   document is not read again), else as text run through the model (``source`` says which);
3. opens a new assistant turn and decodes the answer.

The training chat is ``[user: request, assistant: marker, user: document, assistant: answer]``, so
with text the model sees exactly its training layout; with a doc cache the document's tokens are
those of its embedding pass (``<|embed|>`` format, bidirectional), as in the ``doc_cache`` mode.
At most ``max_retrievals`` per answer: past it the marker's first token is never sampled.
``retrieve="always"`` forces the marker at the start (retrieving first in the same layout),
``"never"`` forbids it; both are the baselines the benchmark compares against.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from ..model.formats import RETRIEVAL_MARKER, TurnStrings, turn_strings
from ..model.sampling import next_token
from .kv import KVSegment, UnsupportedModelError, check_supported, rotate_keys
from .modes import DOC_SEPARATOR
from .retriever import RetrievedDocument, Retriever

RETRIEVE_CHOICES = ("auto", "always", "never")


@dataclass
class Retrieval:
    """One retrieval: the document, how many tokens were generated before the marker that asked
    for it, and whether it came from the index's doc cache (``doc_cache``) or was read as text (``text``)."""

    document: RetrievedDocument
    at_token: int
    source: str


@dataclass
class SelfRetrievalResult:
    """An answer and how it was made. ``answer`` is the generated text without markers;
    ``answer_token_ids`` every generated token (markers included); ``processed_tokens`` the tokens
    run through the model (prompt, turn markers, documents read as text, generated tokens);
    ``inserted_tokens`` the turn markers and documents placed in the context by retrievals,
    ``cached_tokens`` those of them taken from doc caches."""

    answer: str
    retrievals: list[Retrieval]
    answer_token_ids: list[int]
    prompt_tokens: int
    processed_tokens: int
    inserted_tokens: int
    cached_tokens: int
    finish_reason: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _eos_ids(grit) -> set[int]:
    ids = {grit.tokenizer.eos_token_id}
    configured = getattr(grit.model.generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return {i for i in ids if i is not None}


class _Decoder:
    """Greedy or sampled decoding of one sequence over a DynamicCache that documents can be spliced into."""

    def __init__(self, grit, temperature: float, top_p: float, seed: int | None):
        from transformers import DynamicCache

        self.grit = grit
        self.cache = DynamicCache(config=grit.model.config)
        self.length = 0  # tokens in the cache
        self.processed = 0
        self.temperature, self.top_p = temperature, top_p
        self.generator = None
        if temperature > 0:
            self.generator = torch.Generator(device=grit.device)
            if seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(seed)

    @torch.inference_mode()
    def feed(self, ids: list[int]) -> torch.Tensor:
        """Run ``ids`` through the model after the cache; returns the next-token logits."""
        input_ids = torch.tensor([ids], device=self.grit.device)
        out = self.grit.model(input_ids=input_ids, cache=self.cache, use_cache=True, logits_to_keep=1)
        self.cache = out.cache
        self.length += len(ids)
        self.processed += len(ids)
        return out.logits[0, -1].float()

    @torch.inference_mode()
    def splice(self, segment: KVSegment) -> None:
        """Append a cached segment at the cache's current end (its keys re-rotated to those positions)."""
        parameter = next(self.grit.model.parameters())
        keys = rotate_keys(self.grit.model, segment.keys.to(device=parameter.device, dtype=parameter.dtype), self.length)
        values = segment.values.to(device=parameter.device, dtype=parameter.dtype)
        for index, layer in enumerate(self.cache.layers):
            layer.keys = torch.cat([layer.keys, keys[index].unsqueeze(0)], dim=-2)
            layer.values = torch.cat([layer.values, values[index].unsqueeze(0)], dim=-2)
        self.length += len(segment)

    @torch.inference_mode()
    def choose(self, logits: torch.Tensor, banned: int | None) -> int:
        if banned is not None:
            logits = logits.clone()
            logits[banned] = float("-inf")
        return next_token(logits, self.temperature, self.top_p, self.generator)


def self_retrieving_chat(pipeline, messages: list[dict] | str, max_new_tokens: int = 64, max_retrievals: int = 1,
                         top_k: int = 1, retrieve: str = "auto", doc_cache: bool | None = None,
                         marker: str = RETRIEVAL_MARKER, temperature: float = 0.0, top_p: float = 1.0,
                         seed: int | None = None) -> SelfRetrievalResult:
    """Answer a chat with ``pipeline``'s model (a ``RagPipeline``), retrieving from its index when
    the model asks to.

    ``max_new_tokens`` counts generated tokens (markers included); ``top_k`` documents are placed per
    retrieval, in rank order; ``doc_cache`` None uses the doc caches when the index stores them or
    the pipeline has a doc cache pool, True requires them, False reads documents as text.
    ``retrieve``: ``auto`` (the model decides), ``always`` (retrieve before the first answer token)
    or ``never``. Greedy unless ``temperature`` > 0 (then ``top_p`` and ``seed`` apply).
    """
    steps = self_retrieval_steps(pipeline, messages, max_new_tokens, max_retrievals, top_k, retrieve, doc_cache,
                                 marker, temperature, top_p, seed)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def self_retrieval_steps(pipeline, messages: list[dict] | str, max_new_tokens: int = 64, max_retrievals: int = 1,
                         top_k: int = 1, retrieve: str = "auto", doc_cache: bool | None = None,
                         marker: str = RETRIEVAL_MARKER, temperature: float = 0.0, top_p: float = 1.0,
                         seed: int | None = None):
    """``self_retrieving_chat`` as a generator that yields after each unit of model work (the
    prompt's prefill, each decoded token, each retrieval) and returns the SelfRetrievalResult, so
    a server can interleave other requests between them. The arguments are checked at once."""
    retriever: Retriever = pipeline.retriever
    grit, index = retriever.model, retriever.index
    tokenizer = grit.tokenizer
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if not isinstance(messages, list) or not messages or messages[-1].get("role") != "user":
        raise ValueError("messages must be a non-empty list of chat messages ending with a user message")
    if retrieve not in RETRIEVE_CHOICES:
        raise ValueError(f"retrieve must be one of {', '.join(RETRIEVE_CHOICES)}, got {retrieve!r}")
    if max_new_tokens < 1 or max_retrievals < 0 or top_k < 1:
        raise ValueError("max_new_tokens and top_k must be >= 1 and max_retrievals >= 0")
    cached_available = retriever.has_doc_caches
    if doc_cache and not cached_available:
        raise ValueError(f"index {index.path or ''} has no doc caches and the pipeline no doc cache pool; "
                         "build it with --cache-docs, or pass doc_cache=False to read documents as text")
    use_cache = cached_available if doc_cache is None else doc_cache
    text_reason = "doc_cache=False was asked" if cached_available else "the index has no doc caches (build it with --cache-docs)"
    if use_cache:
        try:
            check_supported(grit.model)
        except UnsupportedModelError as error:
            if doc_cache:
                raise
            use_cache, text_reason = False, str(error)
    request = str(messages[-1]["content"])
    strings = turn_strings(tokenizer, messages)
    marker_ids = tokenizer(marker, add_special_tokens=False)["input_ids"]
    if not marker_ids:
        raise ValueError("the retrieval marker must be a non-empty string")
    eos = _eos_ids(grit)
    window = getattr(grit.model.config.get_text_config(), "sliding_window", None)

    settings = _Settings(request, strings, marker, marker_ids, eos, window, retriever.max_length, use_cache,
                         text_reason, max_new_tokens, max_retrievals, top_k, retrieve)
    return _steps(retriever, messages, settings, _Decoder(grit, temperature, top_p, seed))


@dataclass(frozen=True)
class _Settings:
    """One answer's checked arguments and what was read off the model for it."""

    request: str
    strings: TurnStrings
    marker: str
    marker_ids: list[int]
    eos: set[int]
    window: int | None
    max_length: int
    use_cache: bool
    text_reason: str
    max_new_tokens: int
    max_retrievals: int
    top_k: int
    retrieve: str


def _steps(retriever: Retriever, messages: list[dict], run: _Settings, decoder: _Decoder):
    tokenizer = retriever.model.tokenizer
    ids_of = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompt = retriever.model.chat_input_ids(messages)
    generated: list[int] = []
    answer_parts: list[str] = []
    retrievals: list[Retrieval] = []
    used: set[int] = set()
    cached_tokens = inserted = 0
    finish = "length"
    logits = decoder.feed(prompt)
    yield
    segment_start = 0  # index into ``generated`` where the current assistant turn began
    forced = list(run.marker_ids) if run.retrieve == "always" and run.max_retrievals > 0 else []
    while len(generated) < run.max_new_tokens:
        limit_hit = run.retrieve == "never" or len(retrievals) >= run.max_retrievals
        token = forced.pop(0) if forced else decoder.choose(logits, run.marker_ids[0] if limit_hit else None)
        generated.append(token)
        if token in run.eos:
            finish = "stop"
            break
        if len(generated) >= run.max_new_tokens:
            break
        turn_text = tokenizer.decode(generated[segment_start:], skip_special_tokens=True)
        if run.marker in turn_text and not limit_hit:
            answer_parts.append(turn_text.split(run.marker)[0])
            documents = _next_documents(retriever, run.request, run.top_k, used)
            used.update(d.id for d in documents)
            retrievals += [Retrieval(d, len(generated) - len(run.marker_ids), "doc_cache" if run.use_cache else "text")
                           for d in documents]
            # The marker's last token has not been fed yet; the turn closes after it.
            before = decoder.length
            if run.use_cache:
                decoder.feed([token] + ids_of(run.strings.close))
                for document in documents:
                    segment = retriever.doc_segment(document.id)
                    if run.window and decoder.length + len(segment) >= run.window:
                        raise UnsupportedModelError(f"the answer's context no longer fits this model's sliding "
                                                    f"window of {run.window} tokens")
                    decoder.splice(segment)
                    cached_tokens += len(segment)
                logits = decoder.feed(ids_of(run.strings.tail))
            else:
                text_ids = []
                for position, document in enumerate(documents):
                    text_ids += (ids_of(DOC_SEPARATOR) if position else []) + ids_of(document.text)[:run.max_length]
                logits = decoder.feed([token] + ids_of(run.strings.between) + text_ids + ids_of(run.strings.tail))
            inserted += decoder.length - before - 1  # all but the marker's own last token
            segment_start = len(generated)
            yield
            continue
        logits = decoder.feed([token])
        yield
    final_text = tokenizer.decode(generated[segment_start:], skip_special_tokens=True)
    answer_parts.append(final_text.replace(run.marker, ""))
    notes = []
    if retrievals and not run.use_cache:
        notes.append(f"documents were read as text: {run.text_reason}")
    return SelfRetrievalResult("".join(answer_parts).strip(), retrievals, generated, len(prompt),
                               decoder.processed, inserted, cached_tokens, finish, notes)


def _next_documents(retriever: Retriever, request: str, top_k: int, used: set[int]) -> list[RetrievedDocument]:
    vector, _ = retriever.embed_query(request)
    found = retriever.search(vector, min(top_k + len(used), len(retriever.index)))
    return [d for d in found if d.id not in used][:top_k]
