"""Request bodies of the OpenAI-compatible endpoints (pydantic), with the GRIT extras.

Unknown fields are ignored, as OpenAI clients send optional fields this server does not use
(``user``, ``logit_bias``...). OpenAI parameters whose meaning the server cannot honour are
declared, so that a request asking for them is refused with a 400 naming them rather than
answered as if they had been honoured: ``n`` > 1 and ``dimensions`` above the model's in the
endpoint, ``tools``, ``logprobs`` and the like by ``SamplingRequest.refused``. Every text field
is ``Text``: valid Unicode. Limits that depend on the server's configuration (tokens, batch size)
are checked at run time.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StringConstraints


def _valid_unicode(text: str) -> str:
    """``text``, if it is valid Unicode. JSON may carry a lone surrogate (``"\\ud800"``), which is
    no character at all: no tokenizer can encode it, so it is refused here with the field's name."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"contains a lone surrogate (U+{ord(text[exc.start]):04X}) at character {exc.start}, "
                         "which is not valid Unicode") from None
    return text


Text = Annotated[str, AfterValidator(_valid_unicode)]
NonEmpty = Annotated[Text, StringConstraints(min_length=1)]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]
Stop = Union[NonEmpty, Annotated[list[NonEmpty], Field(max_length=4)], None]
TokenIds = Annotated[list[StrictInt], Field(min_length=1)]


def _unsupported():
    """A field for an OpenAI parameter the server cannot honour (see ``SamplingRequest.OFF_VALUES``)."""
    return Field(None, description="not supported: refused unless left out or sent with its off value")


class EmbeddingRequest(BaseModel):
    """POST /v1/embeddings. ``instruction`` or ``input_type`` choose what precedes each text."""

    model_config = ConfigDict(extra="ignore")

    model: Text
    # OpenAI's four shapes: a text, texts, one text as token ids, several texts as token ids.
    input: Union[Text, Annotated[list[Text], Field(min_length=1)], TokenIds,
                 Annotated[list[TokenIds], Field(min_length=1)]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    instruction: Text | None = Field(None, description="GRIT: free-text instruction placed before every input")
    input_type: Literal["query", "document"] | None = Field(
        None, description="GRIT: use the server's configured query or document instruction")
    precision: Literal["float32", "binary", "ubinary"] = Field(
        "float32", description="GRIT: packed sign bits (8 dimensions a byte) instead of floats; see gritkit.model.quantize")


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: Text


class ChatMessage(BaseModel):
    """One chat turn. GRIT has no system role: system text is put before the first user turn."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: Union[Text, list[TextPart]]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingRequest(BaseModel):
    """Decoding options shared by chat and text completions (OpenAI names and ranges)."""

    model_config = ConfigDict(extra="ignore")

    # OpenAI parameters this server cannot honour (it generates plain text: no tool calls,
    # structured output or log probabilities), each with the values that ask for nothing, which
    # clients that fill in every field send; any other value is refused (``refused``).
    OFF_VALUES: ClassVar[dict[str, tuple]] = {
        "tools": (None, []), "tool_choice": (None, "none"), "functions": (None, []),
        "function_call": (None, "none"), "response_format": (None, {"type": "text"}),
        "logprobs": (None, False), "top_logprobs": (None, 0)}

    model: Text
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    stop: Stop = None
    seed: Seed | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = Field(False, description="vLLM's extra: decode past EOS up to max_tokens (for benchmarks)")
    n: Annotated[int, Field(ge=1)] = 1
    tools: Any = _unsupported()
    tool_choice: Any = _unsupported()
    functions: Any = _unsupported()
    function_call: Any = _unsupported()
    response_format: Any = _unsupported()
    logprobs: Any = _unsupported()
    top_logprobs: Any = _unsupported()

    def refused(self) -> list[str]:
        """The unsupported parameters this request sends with a value other than their off value."""
        return [name for name, offs in self.OFF_VALUES.items() if not _is_off(getattr(self, name), offs)]

    def stop_strings(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class RetrievalOptions(BaseModel):
    """GRIT's extra on a chat request (servers with ``--index``): the model retrieves when it writes
    the retrieval marker (``gritkit.rag.self_retrieval``)."""

    model_config = ConfigDict(extra="forbid")

    retrieve: Literal["auto", "always", "never"] = Field(
        "auto", description="auto: the model decides; always: retrieve before answering; never")
    max_retrievals: Annotated[int, Field(ge=0, le=8)] = 1
    top_k: Annotated[int, Field(ge=1, le=10)] = 1
    doc_cache: bool | None = Field(None, description="use the index's doc caches (default: when it has them)")


class ChatCompletionRequest(SamplingRequest):
    """POST /v1/chat/completions."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    retrieval: RetrievalOptions | None = Field(
        None, description="GRIT: let the model retrieve from the server's index mid-answer (not streamed)")


class CompletionRequest(SamplingRequest):
    """POST /v1/completions: each prompt is answered as one user message in the chat format."""

    OFF_VALUES: ClassVar[dict[str, tuple]] = {
        **SamplingRequest.OFF_VALUES, "logprobs": (None,), "echo": (None, False), "suffix": (None, ""),
        "best_of": (None, 1)}

    prompt: Union[NonEmpty, Annotated[list[NonEmpty], Field(min_length=1)]]
    max_tokens: Annotated[int, Field(ge=1)] | None = 16  # OpenAI's default for this endpoint
    echo: Any = _unsupported()
    suffix: Any = _unsupported()
    best_of: Any = _unsupported()


class RagRequest(BaseModel):
    """POST /v1/rag (only with ``--index``): retrieve ``top_k`` documents and answer."""

    model_config = ConfigDict(extra="ignore")

    question: NonEmpty
    mode: Text | None = Field(None, description="a gritkit.rag mode; default doc_cache (rag_doc_first without doc caches)")
    top_k: Annotated[int, Field(ge=1, le=100)] = 1
    max_tokens: Annotated[int, Field(ge=1)] | None = None


class RerankDocument(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: Text


class RerankRequest(BaseModel):
    """POST /v1/rerank, in the shape Cohere, Jina, vLLM and TEI clients send."""

    model_config = ConfigDict(extra="ignore")

    model: Text
    query: NonEmpty
    documents: Annotated[list[Union[NonEmpty, RerankDocument]], Field(min_length=1)]
    top_n: Annotated[int, Field(ge=1)] | None = None
    return_documents: bool = False
    instruction: Text | None = Field(None, description="GRIT: instruction before the query (default: the server's query instruction)")

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


def _is_off(value, offs: tuple) -> bool:
    """Whether ``value`` is one of ``offs``, type included (``logprobs: 0`` asks for log
    probabilities in the completions API, though 0 == False)."""
    return any(type(value) is type(off) and value == off for off in offs)
