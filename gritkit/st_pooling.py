"""GRIT's weighted mean pooling as a sentence-transformers module (see ``gritkit.model.st_export``).

sentence-transformers' own ``weightedmean`` weighs a token by its position in the whole input;
GRIT (like SGPT) weighs the i-th *text* token by i, whatever prefix came before. This module is
named in ``modules.json`` of a model saved with ``pooling="weighted_mean"``; sentence-transformers
imports it only when loaded with ``trust_remote_code=True``, and gritkit must be installed.
"""

from __future__ import annotations

import torch
from sentence_transformers.sentence_transformer.modules import Pooling

from .model.pooling import weighted_mean_pool


class TextWeightedMeanPooling(Pooling):
    """Position-weighted mean over the tokens after the prompt, weights counted from the text."""

    def forward(self, features: dict, **kwargs) -> dict:
        mask = features["attention_mask"]
        prompt_length = features.get("prompt_length")
        if prompt_length is not None:
            prompt_length = int(prompt_length[0]) if isinstance(prompt_length, torch.Tensor) else int(prompt_length)
            positions = torch.arange(mask.shape[1], device=mask.device)[None]
            first_real = mask.to(torch.int32).argmax(dim=1, keepdim=True)  # > 0 only under left padding
            mask = mask * (positions >= first_real + prompt_length)
        pooled = weighted_mean_pool(features["token_embeddings"], mask)
        features["sentence_embedding"] = pooled.to(features["token_embeddings"].dtype)
        return features
