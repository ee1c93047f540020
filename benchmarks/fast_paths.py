"""What the fast inference switches cost in quality: int8 weights, bfloat16, the compiled decode,
oneDNN-prepacked linear layers.

    python benchmarks/fast_paths.py [--model gritkit-smol] [--texts 200] [--prompts 16] [--json]
    python benchmarks/fast_paths.py --smoke --json     # gritkit-tiny, smoke data build, tiny sizes

Each mode (fp32, fp32-compiled, fp32-prepacked, int8-max-autotune, bf16) loads the model as
``GritLM.from_pretrained(..., dtype=, quantize=, compile=, prepack=)`` does
(benchmarks/peers.py measures their speed) and is compared with fp32 on the same inputs:

  cosine     per-text cosine of ``encode`` vectors to fp32's, over ``--texts`` documents of the
             data build's retrieval corpora (min, 1st percentile, mean);
  greedy     of ``--prompts`` chat prompts answered greedily with ``--new-tokens`` tokens, the
             share whose tokens are all fp32's, and the mean share of each answer's tokens before
             the first difference;
  suite      the quick evaluation suite's main scores (``gritkit evaluate --quick``: retrieval,
             classification, clustering, summary ROUGE-L, held-out perplexity), with ``--suite``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import data_dir, parse_args  # noqa: E402

MODES = {"fp32": {"dtype": torch.float32},
         "fp32-compiled": {"dtype": torch.float32, "compile": True},
         "fp32-prepacked": {"dtype": torch.float32, "prepack": True},
         "int8-max-autotune": {"dtype": torch.float32, "quantize": "int8", "compile": "max-autotune"},
         "bf16": {"dtype": torch.bfloat16}}


def corpus_texts(data: Path, count: int) -> list[str]:
    """``count`` documents taken in turn from each retrieval task's corpus of the data build."""
    from gritkit.evaluate.suite import TASKS, load_task

    corpora = [list(load_task(data, file)["corpus"].values()) for kind, file in TASKS.values() if kind == "retrieval"]
    texts = [corpus[i] for i in range(count) for corpus in corpora if i < len(corpus)]
    return texts[:count]


def shared_prefix(a: list[int], b: list[int]) -> float:
    same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return same / max(len(a), 1)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gritkit-smol", help="a model directory or shipped name")
    parser.add_argument("--data", default="runs/data", help="a data build (built there when missing)")
    parser.add_argument("--texts", type=int, default=200)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--suite", action="store_true", help="also run the quick evaluation suite in each mode")
    parser.add_argument("--tasks", default=None, help="comma-separated suite tasks (default: all)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parse_args(parser, argv, smoke=dict(model="gritkit-tiny", data=None, texts=8, prompts=2, new_tokens=4,
                                               suite=True, tasks="faq-qa,heldout-perplexity"))
    from gritkit import GritLM
    from gritkit.evaluate.suite import evaluate, main_scores

    data = data_dir(args)
    texts = corpus_texts(data, args.texts)
    prompts = [f"Summarise this in one sentence: {text[:300]}" for text in texts[: args.prompts]]
    results, reference = {}, {}
    for mode, settings in MODES.items():
        model = GritLM.from_pretrained(args.model, device="cpu", **settings)
        vectors = torch.as_tensor(model.encode(texts, show_progress_bar=False)).float()
        answers = []
        for prompt in prompts:
            text = model.generate(prompt, max_new_tokens=args.new_tokens)
            answers.append(model.tokenizer(text, add_special_tokens=False)["input_ids"])
        figures = {}
        if mode == "fp32":
            reference = {"vectors": vectors, "answers": answers}
        else:
            cosine = torch.nn.functional.cosine_similarity(vectors, reference["vectors"]).sort().values
            figures["cosine"] = {"min": float(cosine[0]), "p1": float(cosine[int(0.01 * (len(cosine) - 1))]),
                                 "mean": float(cosine.mean())}
            figures["greedy"] = {
                "identical": sum(a == b for a, b in zip(answers, reference["answers"])) / len(answers),
                "shared_prefix": statistics.mean(shared_prefix(b, a) for a, b in zip(answers, reference["answers"]))}
        if args.suite and mode != "fp32-compiled":  # the compiled decode changes no score the suite reads
            suite = evaluate(model, args.tasks and args.tasks.split(","), quick=True, data_dir=data, baselines=(),
                             log=lambda *_: None)
            figures["suite"] = {task: main_scores(entry)["model"] for task, entry in suite["tasks"].items()}
        results[mode] = figures
        print(mode, json.dumps(figures), flush=True)
    if args.json:
        print(json.dumps({"model": str(args.model), "texts": len(texts), "prompts": len(prompts),
                          "new_tokens": args.new_tokens, "modes": results}))


if __name__ == "__main__":
    main()
