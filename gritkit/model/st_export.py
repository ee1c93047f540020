"""The files that make a saved GritLM directory load in sentence-transformers with GritLM's vectors.

    model.save_pretrained("m")                      # writes these files too
    SentenceTransformer("m").encode_query(queries)  # == model.encode_query(queries), bidirectional

Without them ``SentenceTransformer("m")`` builds its default pipeline over the decoder: causal
attention and a mean over every token, BOS and format markers included, a silently different
vector. With them it reproduces ``GritLM.encode`` from sentence-transformers' own modules:

- Bidirectional attention: transformers builds a bidirectional mask for any decoder whose config
  says ``is_causal: false``. That key must not reach ``config.json`` itself (every
  ``AutoModelForCausalLM`` user would then generate bidirectionally), and transformers drops a
  loading keyword a config does not already have. So ``config.json`` gets ``is_causal: true``
  (transformers' own default, nothing changes for generation) and sentence-transformers'
  ``config_kwargs`` turn it to false for its load only.
- The pool covers the text only: the GRIT prefix is a sentence-transformers prompt, and
  ``include_prompt: false`` drops its tokens (BOS included) from the pool. Prompts are measured
  in tokens alone, gritkit finds the text from character offsets; the two agree unless a text
  starts with whitespace the tokenizer merges into the prefix's last newline.
- ``mean``, ``last_token`` and ``cls`` are sentence-transformers' own ``mean``, ``lasttoken`` and
  ``cls`` pooling once the prompt is excluded. ``weighted_mean`` is not: its built-in weights
  count positions from the start of the input, GRIT's from the first text token. Such a model
  names ``gritkit.st_pooling.TextWeightedMeanPooling``, which sentence-transformers 6 imports only
  with ``trust_remote_code=True`` (any class outside its own package needs it), so a plain load
  fails loudly instead of pooling differently.
- A projection head is a ``Dense`` layer without activation; ``Normalize`` makes vectors unit
  length, as ``encode`` does by default.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .config import GritConfig

ST_POOLING = {"mean": "mean", "last_token": "lasttoken", "cls": "cls"}
WEIGHTED_MEAN_CLASS = "gritkit.st_pooling.TextWeightedMeanPooling"
_MODULES = "sentence_transformers.base.modules"


def st_prompts(config: GritConfig) -> tuple[dict[str, str], str]:
    """(prompts, default prompt name): the GRIT prefixes of queries, documents and plain ``encode``."""
    prefix = lambda instruction: config.format.embedding_prompt("", instruction)[0]  # noqa: E731
    prompts = {"query": prefix(config.default_query_instruction), "document": prefix(config.document_instruction)}
    if config.document_instruction:  # plain encode() uses no instruction: give it its own prompt
        prompts["plain"] = prefix("")
        return prompts, "plain"
    return prompts, "document"


def write_sentence_transformers_files(directory: str | Path, config: GritConfig, hidden_size: int,
                                      max_seq_length: int, projection_head: torch.nn.Linear | None = None) -> None:
    """Write sentence-transformers' module files into a model directory ``save_pretrained`` wrote.

    ``hidden_size`` is the decoder's width, ``max_seq_length`` the tokens an input is cut to
    (prefix included, as in ``encode``).
    """
    directory = Path(directory)
    modules = [_module(0, "", f"{_MODULES}.transformer.Transformer")]
    transformer = {"transformer_task": "feature-extraction", "max_seq_length": max_seq_length,
                   "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
                   "module_output_name": "token_embeddings"}
    if config.attention == "bidirectional":
        transformer["config_kwargs"] = {"is_causal": False}
        _set_config_key(directory / "config.json", "is_causal", True)
    _write_json(directory / "sentence_bert_config.json", transformer)

    pooling_class = (WEIGHTED_MEAN_CLASS if config.pooling == "weighted_mean"
                     else "sentence_transformers.sentence_transformer.modules.pooling.Pooling")
    modules.append(_module(1, "1_Pooling", pooling_class))
    _write_json(directory / "1_Pooling" / "config.json", {
        "embedding_dimension": hidden_size, "pooling_mode": ST_POOLING.get(config.pooling, "weightedmean"),
        "include_prompt": False})
    if projection_head is not None:
        from safetensors.torch import save_file

        dense = directory / f"{len(modules)}_Dense"
        modules.append(_module(len(modules), dense.name, f"{_MODULES}.dense.Dense"))
        _write_json(dense / "config.json", {
            "in_features": projection_head.in_features, "out_features": projection_head.out_features,
            "bias": projection_head.bias is not None, "activation_function": "torch.nn.modules.linear.Identity"})
        save_file({f"linear.{k}": v.detach().cpu().contiguous() for k, v in projection_head.state_dict().items()},
                  str(dense / "model.safetensors"))
    normalize = f"{len(modules)}_Normalize"
    modules.append(_module(len(modules), normalize, f"{_MODULES}.normalize.Normalize"))
    _write_json(directory / normalize / "config.json", {})
    _write_json(directory / "modules.json", modules)

    prompts, default = st_prompts(config)
    _write_json(directory / "config_sentence_transformers.json", {
        "model_type": "SentenceTransformer", "prompts": prompts, "default_prompt_name": default,
        "similarity_fn_name": "cosine"})


def _module(index: int, path: str, class_ref: str) -> dict:
    return {"idx": index, "name": str(index), "path": path, "type": class_ref}


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _set_config_key(path: Path, key: str, value) -> None:
    data = json.loads(path.read_text())
    data[key] = value
    _write_json(path, data)
