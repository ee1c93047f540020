"""Prompt formats of GRIT and the token masks derived from them.

Embedding input:  ``<|user|>\\n{instruction}\\n<|embed|>\\n{text}`` (or ``<|embed|>\\n{text}``
without an instruction); BOS is whatever the tokenizer adds. Generation uses the chat format
``<|user|>\\n{user}\\n<|assistant|>\\n{answer}</s>`` with turns joined by ``\\n``.

Which tokens are pooled is decided from character offsets on the *full* formatted string: a
token belongs to the text when its character span ends after the text's first character. This
stays right when the tokenizer merges characters across the instruction/text boundary, which
tokenising the instruction separately (the reference implementation) gets wrong.

Which tokens a generative example keeps when it is too long is decided here too
(``fit_to_length``): the prompt is cut before the answer, which is what the loss is on.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import asdict, dataclass

# Renders the GRIT chat format; set on tokenizers that have no chat template of their own.
# Newlines are Jinja string literals because transformers renders with trim_blocks, which eats
# a raw newline that follows a block tag.
GRIT_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}"
    "{% if not loop.first %}{{ '\\n' }}{% endif %}"
    "{{ '<|user|>\\n' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\\n' + message['content'] + eos_token }}"
    "{% else %}"
    "{{ raise_exception('GRIT chat format has roles user and assistant only, got ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

# What a model trained for self-retrieval (``gritkit.rag.self_retrieval``) writes when its answer
# needs a document it does not have; plain text, so no tokenizer needs a new token for it.
RETRIEVAL_MARKER = "<|retrieve|>"


@dataclass(frozen=True)
class GritFormat:
    """The strings placed around a text before it is embedded, and the chat turn that follows
    an embedding pass's key/value cache in the cached RAG modes (``after_cache``: it closes the
    embedded segment and opens the user and assistant turns, in the model's own chat markers)."""

    embed_with_instruction: str = "<|user|>\n{instruction}\n<|embed|>\n"
    embed_without_instruction: str = "<|embed|>\n"
    after_cache: str = "\n<|user|>\n{user}\n<|assistant|>\n"

    def embedding_prompt(self, text: str, instruction: str = "") -> tuple[str, int]:
        """Return the formatted string and the character offset where ``text`` starts in it."""
        if instruction:
            prefix = self.embed_with_instruction.format(instruction=instruction)
        else:
            prefix = self.embed_without_instruction
        return prefix + text, len(prefix)

    def continuation(self, user: str) -> str:
        """``after_cache`` with the user turn's content."""
        return self.after_cache.replace("{user}", user)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GritFormat":
        return cls(**data)


def text_token_mask(offsets: list[tuple[int, int]], text_start: int) -> list[bool]:
    """Which tokens belong to the text, given each token's (start, end) character span.

    Tokens with an empty span (BOS, EOS and other added special tokens) are never text. A token
    that straddles the boundary (part format, part text) counts as text, since it carries text.
    """
    return [end > start and end > text_start for start, end in offsets]


# ---------------------------------------------------------------------------------- truncation
# An example whose answer cannot keep at least this share of its tokens is dropped, not trained on:
# the start of an answer cut in the middle teaches a model to stop mid-sentence.
MIN_ANSWER_SHARE = 0.5
FIT_STATUSES = ("kept", "shortened", "answer_cut", "dropped")


def instruction_length(content: str) -> int:
    """Characters at the start of a user turn that state the task and are never cut.

    Up to and including the first blank line ("Summarise this package description in one
    line.\\n\\n{description}"), else the first sentence, else the whole turn.
    """
    blank = content.find("\n\n")
    if blank >= 0:
        return blank + 2
    match = re.search(r"[.?!:](\s|$)", content)
    return match.end() if match else len(content)


def fit_to_length(ids: list[int], trained: list[bool], cuttable: list[bool], max_length: int,
                  min_answer_share: float = MIN_ANSWER_SHARE) -> tuple[list[int], list[bool], str]:
    """Cut an example to ``max_length`` tokens, prompt first, answer last; returns (ids, trained, status).

    ``trained`` marks the tokens the loss is on (the answer), ``cuttable`` the prompt tokens that
    may go (user text after its instruction). Cuttable tokens are removed from the end of each
    cuttable run, earliest run first, so every user turn keeps its instruction and the start of
    its text and the answer keeps its place right after the prompt. If that is not enough the
    example is cut at its end, which shortens the answer; when less than ``min_answer_share`` of
    the answer's tokens remain the example is dropped (``([], [], "dropped")``).

    Status: ``kept`` (fits), ``shortened`` (prompt cut, whole answer kept), ``answer_cut``,
    ``dropped``.
    """
    if len(ids) <= max_length:
        return list(ids), list(trained), "kept"
    excess = len(ids) - max_length
    remove = [False] * len(ids)
    runs, position = [], 0  # (start, end) of each maximal cuttable run
    for may_go, group in itertools.groupby(c and not t for c, t in zip(cuttable, trained)):
        length = sum(1 for _ in group)
        if may_go:
            runs.append((position, position + length))
        position += length
    for start, run_end in runs:
        if excess == 0:
            break
        take = min(excess, run_end - start)
        for position in range(run_end - take, run_end):
            remove[position] = True
        excess -= take
    kept_ids = [t for t, r in zip(ids, remove) if not r]
    kept_trained = [t for t, r in zip(trained, remove) if not r]
    if excess == 0:
        return kept_ids, kept_trained, "shortened"
    answer = sum(trained)
    kept_ids, kept_trained = kept_ids[:max_length], kept_trained[:max_length]
    if answer and sum(kept_trained) < min_answer_share * answer:
        return [], [], "dropped"
    return kept_ids, kept_trained, "answer_cut"


def chat_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of a chat ending with the assistant's turn marker: the one rule for what a chat
    prompt costs, used by ``GritLM.chat_input_ids`` and the server's prompt-length check."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # The template writes BOS itself, so the tokenizer must not add another.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# Placeholders that no chat template writes, to find where it puts message contents.
_ANSWER, _DOCUMENT = "\x00answer\x00", "\x00document\x00"


@dataclass(frozen=True)
class TurnStrings:
    """What the chat template writes around a document turn that follows an assistant turn:
    ``close`` ends the assistant turn, ``between`` ends it and opens the user turn, ``tail`` ends the
    user turn and opens the next assistant turn."""

    close: str
    between: str
    tail: str


def turn_strings(tokenizer, messages: list[dict]) -> TurnStrings:
    """Read the strings around a document turn off the tokenizer's own chat template."""
    through_answer = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": _ANSWER}], tokenize=False)
    with_document = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": _ANSWER}, {"role": "user", "content": _DOCUMENT}],
        tokenize=False, add_generation_prompt=True)
    if through_answer.count(_ANSWER) != 1 or with_document.count(_DOCUMENT) != 1:
        raise ValueError("the tokenizer's chat template does not copy message contents verbatim; "
                         "self-retrieval needs one that does")
    answer_end = with_document.index(_ANSWER) + len(_ANSWER)
    document_at = with_document.index(_DOCUMENT)
    close = through_answer[through_answer.index(_ANSWER) + len(_ANSWER):]
    between = with_document[answer_end:document_at]
    if not between.startswith(close):
        raise ValueError("the tokenizer's chat template renders an assistant turn differently before a user turn")
    return TurnStrings(close, between, with_document[document_at + len(_DOCUMENT):])
