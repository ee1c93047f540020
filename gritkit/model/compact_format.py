"""The compact format: GRIT's marker strings as single added special tokens of a pretrained tokenizer.

GritLM-7B's format writes ``<|user|>``, ``<|embed|>`` and ``<|assistant|>`` as plain text, which
a pretrained tokenizer that has never seen them splits into several pieces (``<``, ``|``,
``user``, ``|>``...) on every sample. The GRIT paper names dedicated special tokens as the
remedy it left for later. ``add_marker_tokens`` adds every marker of a model's embedding format
and chat template that its tokenizer splits as one special token, with its input (and, when
untied, output) embedding row the mean of the rows of the pieces it replaces, so that the new
token starts near what the model read before. The byte-exact format stays the default: a
checkpoint trained with split markers (GritLM-7B) embeds as it was trained only with them.

The markers added are recorded in ``GritConfig.special_markers`` and saved with the model;
loading checks that the tokenizer saved beside it still keeps each one whole.
"""

from __future__ import annotations

import re

import torch

MARKER = re.compile(r"<\|[A-Za-z_]+\|>")


def format_markers(config, tokenizer) -> list[str]:
    """``<|...|>`` markers of the embedding format and the chat template, in order of first use."""
    sources = [*config.format.to_dict().values(), tokenizer.chat_template or ""]
    found = []
    for text in sources:
        for marker in MARKER.findall(text if isinstance(text, str) else ""):
            if marker not in found:
                found.append(marker)
    return found


def marker_pieces(tokenizer, markers) -> dict[str, list[int]]:
    """The token ids of each marker the tokenizer splits into more than one token."""
    pieces = {}
    for marker in markers:
        ids = tokenizer(marker, add_special_tokens=False)["input_ids"]
        if len(ids) > 1:
            pieces[marker] = ids
    return pieces


def add_marker_tokens(grit):
    """A GritLM whose format markers are single special tokens (see the module docstring).

    The model's embedding matrices and the tokenizer are changed in place (a GritLM shares them
    with the one returned); markers that are already single tokens are left alone. Returns a
    GritLM on the same weights, with ``config.special_markers`` listing every marker added so far.
    """
    markers = add_markers(grit.model, grit.tokenizer, grit.config)
    return grit if markers == grit.config.special_markers else grit.with_config(special_markers=markers)


def add_markers(model, tokenizer, config) -> tuple[str, ...]:
    """``add_marker_tokens`` on a transformers model and its tokenizer, in place; returns the
    special markers the model now has (``config.special_markers`` plus those added)."""
    from tokenizers import AddedToken

    pieces = marker_pieces(tokenizer, format_markers(config, tokenizer))
    if not pieces:
        return tuple(config.special_markers)
    tokenizer.add_tokens([AddedToken(m, special=True, normalized=False) for m in pieces], special_tokens=True)
    rows = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(max(rows, len(tokenizer)), mean_resizing=False)
    inputs, outputs = model.get_input_embeddings().weight, model.get_output_embeddings()
    untied = outputs is not None and outputs.weight.data_ptr() != inputs.data_ptr()
    with torch.no_grad():
        # Rows for tokens the tokenizer already had beyond the matrix would start random; the
        # mean row makes the result a function of the model alone, which rebuilding a shipped
        # compact-format adapter on its base relies on (gritkit.weights.adapters).
        for matrix in (inputs, outputs.weight if untied else None):
            if matrix is not None and matrix.shape[0] > rows:
                matrix[rows:] = matrix[:rows].mean(0)
        for marker, ids in pieces.items():
            new = tokenizer.convert_tokens_to_ids(marker)
            inputs[new] = inputs[ids].mean(0)
            if untied:
                outputs.weight[new] = outputs.weight[ids].mean(0)
    return tuple(dict.fromkeys((*config.special_markers, *pieces)))


def check_special_markers(tokenizer, markers) -> None:
    """Raise ValueError unless every marker the config lists is one token of ``tokenizer``."""
    split = sorted(marker_pieces(tokenizer, markers))
    if split:
        raise ValueError(f"the model's config lists {', '.join(split)} as single special tokens, but its tokenizer "
                         "splits them; load the tokenizer saved with the model (gritkit.model.compact_format)")
