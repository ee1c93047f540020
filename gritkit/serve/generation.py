"""One generation request: what it asks for, how its text goes back, how it ends.

``GenerationJob`` is what the HTTP side hands the worker; ``TextDeltas`` turns the request's new
token ids into streamed text deltas that never run past a stop string; ``GenerationResult`` is the
end. The decoding itself is ``decoding.BatchDecoder``'s.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class GenerationJob:
    """What the worker needs to answer one prompt; events go back through ``emit``.

    Events: ``("start", prompt_tokens)``, ``("delta", text)`` zero or more times, then
    ``("done", GenerationResult)`` or ``("error", exception)``. ``emit`` must be thread-safe.
    """

    messages: list[dict]
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: list[str]
    emit: Callable[[tuple], None]
    cancelled: threading.Event = field(default_factory=threading.Event)
    stream: bool = True  # False: no ("delta", text) events, the text comes whole with "done"
    ignore_eos: bool = False  # vLLM's option: decode past EOS up to max_new_tokens (benchmarks)
    prompt_tokens: int = 0  # the route's count of the prompt's tokens (the worker's prefill budget); 0: unknown


@dataclass
class GenerationResult:
    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    prompt_tokens: int
    completion_tokens: int


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """``text`` up to the earliest occurrence of any stop string, and whether one occurred."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


class TextDeltas:
    """Collects a request's generated ids and sends the text that is safe to send as deltas.

    A delta never contains text that could still turn out to be the start of a stop string (the
    last ``len(longest stop) - 1`` characters are held back) or a half-decoded UTF-8 character
    (a trailing U+FFFD), so the deltas always join into a prefix of the final text.
    """

    def __init__(self, tokenizer, stop: list[str], on_text: Callable[[str], None] | None):
        """``on_text`` None: nothing is streamed, and the text is only decoded for stop strings."""
        self.tokenizer, self.stop, self.on_text = tokenizer, stop, on_text
        self.holdback = max((len(s) for s in stop), default=1) - 1
        self.ids: list[int] = []
        self.sent = 0  # characters already sent as deltas
        self.stopped = False  # a stop string has appeared

    def add(self, token: int) -> None:
        self.ids.append(token)
        if self.on_text is None and not self.stop:
            return  # nothing to send and nothing to look for: decode once, at the end
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        text, self.stopped = cut_at_stop(text, self.stop)
        safe = len(text) if self.stopped else len(text.rstrip("\ufffd")) - self.holdback
        if safe > self.sent and self.on_text is not None:
            self.on_text(text[self.sent: safe])
            self.sent = safe
