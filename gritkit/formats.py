"""Prompt formats of GRIT and the token masks derived from them.

Embedding input:  ``<|user|>\\n{instruction}\\n<|embed|>\\n{text}`` (or ``<|embed|>\\n{text}``
without an instruction); BOS is whatever the tokenizer adds. Generation uses the chat format
``<|user|>\\n{user}\\n<|assistant|>\\n{answer}</s>`` with turns joined by ``\\n``.

Which tokens are pooled is decided from character offsets on the *full* formatted string: a
token belongs to the text when its character span ends after the text's first character. This
stays right when the tokenizer merges characters across the instruction/text boundary, which
tokenising the instruction separately (the reference implementation) gets wrong.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class GritFormat:
    """The strings placed around a text before it is embedded."""

    embed_with_instruction: str = "<|user|>\n{instruction}\n<|embed|>\n"
    embed_without_instruction: str = "<|embed|>\n"

    def embedding_prompt(self, text: str, instruction: str = "") -> tuple[str, int]:
        """Return the formatted string and the character offset where ``text`` starts in it."""
        if instruction:
            prefix = self.embed_with_instruction.format(instruction=instruction)
        else:
            prefix = self.embed_without_instruction
        return prefix + text, len(prefix)

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
