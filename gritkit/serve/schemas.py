"""Request bodies of the OpenAI-compatible endpoints (pydantic), with the GRIT extras.

Unknown fields are ignored, as OpenAI clients send optional fields this server does not use
(``user``, ``logit_bias``...). Fields whose meaning the server cannot honour (``n`` > 1,
``dimensions`` above the model's) are rejected in the endpoint with a 400 that names them.
Limits that depend on the server's configuration (tokens, batch size) are checked at run time.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

NonEmpty = Annotated[str, StringConstraints(min_length=1)]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]
Stop = Union[NonEmpty, Annotated[list[NonEmpty], Field(max_length=4)], None]


class EmbeddingRequest(BaseModel):
    """POST /v1/embeddings. ``instruction`` or ``input_type`` choose what precedes each text."""

    model_config = ConfigDict(extra="ignore")

    model: str
    input: Union[str, Annotated[list[str], Field(min_length=1)]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    instruction: str | None = Field(None, description="GRIT: free-text instruction placed before every input")
    input_type: Literal["query", "document"] | None = Field(
        None, description="GRIT: use the server's configured query or document instruction")
    precision: Literal["float32", "binary", "ubinary"] = Field(
        "float32", description="GRIT: packed sign bits (8 dimensions a byte) instead of floats; see gritkit.model.quantize")


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One chat turn. GRIT has no system role: system text is put before the first user turn."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart]]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingRequest(BaseModel):
    """Decoding options shared by chat and text completions (OpenAI names and ranges)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    stop: Stop = None
    seed: Seed | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = Field(False, description="vLLM's extra: decode past EOS up to max_tokens (for benchmarks)")
    n: Annotated[int, Field(ge=1)] = 1

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

    prompt: Union[NonEmpty, Annotated[list[NonEmpty], Field(min_length=1)]]
    max_tokens: Annotated[int, Field(ge=1)] | None = 16  # OpenAI's default for this endpoint


class RagRequest(BaseModel):
    """POST /v1/rag (only with ``--index``): retrieve ``top_k`` documents and answer."""

    model_config = ConfigDict(extra="ignore")

    question: NonEmpty
    mode: str | None = Field(None, description="a gritkit.rag mode; default doc_cache (rag_doc_first without doc caches)")
    top_k: Annotated[int, Field(ge=1, le=100)] = 1
    max_tokens: Annotated[int, Field(ge=1)] | None = None


class RerankDocument(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str


class RerankRequest(BaseModel):
    """POST /v1/rerank, in the shape Cohere, Jina, vLLM and TEI clients send."""

    model_config = ConfigDict(extra="ignore")

    model: str
    query: NonEmpty
    documents: Annotated[list[Union[NonEmpty, RerankDocument]], Field(min_length=1)]
    top_n: Annotated[int, Field(ge=1)] | None = None
    return_documents: bool = False
    instruction: str | None = Field(None, description="GRIT: instruction before the query (default: the server's query instruction)")

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]
