"""One generation request run to completion: streaming deltas, stop strings, finish reason.

``run_generation`` calls ``GritLM.generate`` itself (so greedy output is exactly the library's)
and hangs a ``TokenSink`` on it, which is both the transformers streamer (it sees every new
token) and a stopping criterion (it ends generation at a stop string or when the client left).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from .errors import APIError


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


class TokenSink(BaseStreamer, StoppingCriteria):
    """Collects generated ids, sends text deltas, and stops generation at a stop string.

    A delta never contains text that could still turn out to be the start of a stop string (the
    last ``len(longest stop) - 1`` characters are held back) or a half-decoded UTF-8 character
    (a trailing U+FFFD), so the deltas always join into a prefix of the final text.
    """

    def __init__(self, tokenizer, stop: list[str], on_text: Callable[[str], None], cancelled: threading.Event):
        self.tokenizer, self.stop, self.on_text, self.cancelled = tokenizer, stop, on_text, cancelled
        self.holdback = max((len(s) for s in stop), default=1) - 1
        self.ids: list[int] = []
        self.sent = 0  # characters already sent as deltas
        self.stopped = False
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate() first hands over the prompt ids
            self._prompt_seen = True
            return
        self.ids.extend(value.reshape(-1).tolist())
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        text, self.stopped = cut_at_stop(text, self.stop)
        safe = len(text) if self.stopped else len(text.rstrip("\ufffd")) - self.holdback
        if safe > self.sent:
            self.on_text(text[self.sent: safe])
            self.sent = safe

    def end(self) -> None:
        pass

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        done = self.stopped or self.cancelled.is_set()
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def run_generation(model, job: GenerationJob, max_input_tokens: int) -> GenerationResult:
    """Generate the answer of ``job`` with ``model`` (a GritLM), emitting its events.

    Temperature 0 decodes greedily, as ``GritLM.generate`` does by default; otherwise it samples
    with OpenAI's meaning of ``temperature`` and ``top_p`` (no top-k cut).
    """
    prompt_tokens = len(model.chat_input_ids(job.messages))
    if prompt_tokens > max_input_tokens:
        raise APIError(400, f"the prompt has {prompt_tokens} tokens, more than this server's limit of "
                            f"{max_input_tokens}", param="messages", code="context_length_exceeded")
    job.emit(("start", prompt_tokens))
    sink = TokenSink(model.tokenizer, job.stop, lambda text: job.emit(("delta", text)), job.cancelled)
    sampling = {}
    if job.temperature > 0:
        sampling = dict(do_sample=True, temperature=job.temperature, top_p=job.top_p, top_k=0)
    if job.seed is not None:
        torch.manual_seed(job.seed)  # only this worker thread draws from torch's global generator
    text = model.generate(job.messages, max_new_tokens=job.max_new_tokens, streamer=sink,
                          stopping_criteria=StoppingCriteriaList([sink]), **sampling)
    text, hit_stop = cut_at_stop(text, job.stop)
    if len(text) > sink.sent:
        job.emit(("delta", text[sink.sent:]))
    ended_by_eos = bool(sink.ids) and sink.ids[-1] == model.tokenizer.eos_token_id
    finish = "stop" if hit_stop or ended_by_eos or len(sink.ids) < job.max_new_tokens else "length"
    return GenerationResult(text, finish, prompt_tokens, len(sink.ids))
