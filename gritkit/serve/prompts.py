"""The prompt-length rule, and the tokenizer the HTTP side counts prompts with before queueing them.

Every route that runs the model applies ``check_prompt_length`` to the prompt as the model will
see it (chat template, instruction and format included): chat and completions, RAG and chat with
retrieval here, before any work is queued, so an over-long prompt never holds a queue slot or the
model thread; embedding inputs on the worker's tokenization pass, which they need anyway, before
any forward pass (one over-long text then fails only its own request, not its batch).
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Sequence

from ..model.formats import chat_prompt_ids
from .errors import APIError


def check_prompt_length(tokens: int, limit: int, param: str, what: str = "the prompt") -> None:
    """400 ``context_length_exceeded`` naming the count and the limit when ``tokens`` > ``limit``."""
    if tokens > limit:
        raise APIError(400, f"{what} has {tokens} tokens, more than this server's limit of {limit} tokens; shorten it",
                       param=param, code="context_length_exceeded")


class PromptTokens:
    """A copy of the model's tokenizer for the HTTP side: counts prompts and decodes token-id input.

    A copy, because a Hugging Face fast tokenizer must not be driven from two threads at once (the
    worker tokenizes with truncation, which changes the shared tokenizer's settings), and the
    worker owns the model's. Each call runs on a thread of the event loop's pool, one at a time,
    so tokenizing a 1 MB prompt (about 0.4 s) never stalls the other requests' HTTP traffic.
    """

    def __init__(self, model, limit: int):
        self._tokenizer = copy.deepcopy(model.tokenizer)
        self._format = model.format
        self._lock = threading.Lock()
        self.limit = limit
        self.vocabulary = len(self._tokenizer)

    async def chat(self, messages: list[dict]) -> int:
        """Tokens of ``messages`` as ``GritLM.chat_input_ids`` makes them (template, assistant marker)."""
        return await self._run(self._chat, messages)

    async def embedding(self, text: str, instruction: str) -> int:
        """Tokens of ``text`` in GRIT's embedding format after ``instruction``, untruncated."""
        return await self._run(self._embedding, text, instruction)

    async def text(self, text: str) -> int:
        """Tokens of plain ``text`` without special tokens (a continuation after a cache)."""
        return await self._run(self._text, text)

    async def decode(self, id_lists: Sequence[Sequence[int]]) -> list[str]:
        """The text of each list of the model's token ids (special tokens left out)."""
        return await self._run(self._decode, id_lists)

    async def check_chat(self, messages: list[dict], param: str) -> int:
        """The chat prompt's token count; 400 when it is over the limit."""
        tokens = await self.chat(messages)
        check_prompt_length(tokens, self.limit, param)
        return tokens

    async def _run(self, fn, *args):
        def locked():
            with self._lock:
                return fn(*args)

        return await asyncio.to_thread(locked)

    def _chat(self, messages: list[dict]) -> int:
        return len(chat_prompt_ids(self._tokenizer, messages))

    def _embedding(self, text: str, instruction: str) -> int:
        prompt, _ = self._format.embedding_prompt(text, instruction)
        return len(self._tokenizer(prompt, add_special_tokens=True)["input_ids"])

    def _text(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def _decode(self, id_lists: Sequence[Sequence[int]]) -> list[str]:
        return self._tokenizer.batch_decode([list(ids) for ids in id_lists], skip_special_tokens=True,
                                            clean_up_tokenization_spaces=False)
