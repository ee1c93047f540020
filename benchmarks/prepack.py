"""What prepacked (oneDNN-reordered) linear layers give: the server's batched decode step, prefill, embedding.

    python benchmarks/prepack.py --model gritkit-smol [--rows 16] [--repeats 7] [--json]
    python benchmarks/prepack.py --smoke --json     # gritkit-tiny, small sizes, 1 repeat

The same model loaded twice per dtype, ``GritLM.from_pretrained(..., prepack=False)`` and
``prepack=True`` (float32, and bfloat16 where the CPU has its instructions), timed on:

- ``step_N``: one decode step of ``gritkit serve``'s batch decoder with N running greedy chats
  (``--rows``, and 1), the work between an embedding request and the next;
- ``prefill``: one forward pass over a ``--prefill``-token prompt (the last token's logits);
- ``embed``: ``encode`` of ``--texts`` texts of 10-500 words (16: ~7,000 tokens).

Each figure is the median of ``--repeats``, the two loadings interleaved so that drift in machine
load hits both alike. Prints each figure, the ratio plain / prepacked (above 1: prepacked is
faster), and whether both decoders chose the same tokens and how close the vectors came.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import parse_args  # noqa: E402
from gritkit import GritLM  # noqa: E402
from gritkit.model.prepacked_linear import prepack_problem  # noqa: E402
from gritkit.serve.decoding import BatchDecoder  # noqa: E402
from gritkit.serve.generation import GenerationJob  # noqa: E402

WORDS = ("the model reads every document once and keeps its keys and values for the answers that "
         "follow, so a question costs only its own tokens").split()


def chat(i: int) -> GenerationJob:
    prompt = f"Tell me a short story about the number {i} and a cat who likes it."
    return GenerationJob([{"role": "user", "content": prompt}], 1 << 20, 0.0, 1.0, None, [], lambda event: None,
                         stream=False, ignore_eos=True)


def decoder(model: GritLM, rows: int, warm_steps: int) -> BatchDecoder:
    """A batch decoder with ``rows`` running chats, a few steps in."""
    running = BatchDecoder(model, max_running=rows, max_input_tokens=512)
    running.admit([chat(i) for i in range(rows)])
    for _ in range(warm_steps):
        running.step()
    return running


def texts(count: int) -> list[str]:
    return [" ".join(WORDS[j % len(WORDS)] for j in range(10 + (490 * i) // max(count - 1, 1))) for i in range(count)]


def interleaved_medians(cases: dict[str, dict], repeats: int) -> dict[str, dict[str, float]]:
    """``{loading: {figure: median seconds}}`` of ``cases`` ``{loading: {figure: fn}}``, each fn run
    once untimed, then ``repeats`` rounds with every loading's figure run in turn."""
    times = {loading: {figure: [] for figure in figures} for loading, figures in cases.items()}
    for figures in cases.values():
        for fn in figures.values():
            fn()
    for _ in range(repeats):
        for figure in next(iter(cases.values())):
            for loading, figures in cases.items():
                start = time.perf_counter()
                figures[figure]()
                times[loading][figure].append(time.perf_counter() - start)
    return {loading: {figure: statistics.median(values) for figure, values in figures.items()}
            for loading, figures in times.items()}


def measure(args, dtype: torch.dtype) -> dict:
    models = {name: GritLM.from_pretrained(args.model, device="cpu", dtype=dtype, prepack=name == "prepacked")
              for name in ("plain", "prepacked")}
    corpus = texts(args.texts)
    prompt = " ".join(WORDS[j % len(WORDS)] for j in range(args.prefill))
    cases, decoders = {}, {}
    for name, model in models.items():
        ids = torch.tensor([model.tokenizer(prompt, add_special_tokens=False)["input_ids"][: args.prefill]])
        decoders[name] = {rows: decoder(model, rows, warm_steps=2) for rows in sorted({1, args.rows})}

        def prefill(model=model, ids=ids):
            with torch.inference_mode():
                model.model(ids, logits_to_keep=1)

        cases[name] = {**{f"step_{rows}": running.step for rows, running in decoders[name].items()},
                       "prefill": prefill,
                       "embed": lambda model=model: model.encode(corpus, show_progress_bar=False)}
    seconds = interleaved_medians(cases, args.repeats)
    vectors = {name: torch.as_tensor(model.encode(corpus, show_progress_bar=False)).float()
               for name, model in models.items()}
    cosine = torch.nn.functional.cosine_similarity(vectors["plain"], vectors["prepacked"])
    tokens = {name: [row.deltas.ids for row in decoders[name][args.rows].rows] for name in models}
    return {"seconds": seconds,
            "speedup": {figure: seconds["plain"][figure] / seconds["prepacked"][figure] for figure in seconds["plain"]},
            "same_tokens": tokens["plain"] == tokens["prepacked"], "min_cosine": float(cosine.min())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gritkit-smol", help="a model directory or shipped name")
    parser.add_argument("--rows", type=int, default=16, help="running chats in the batched decode step")
    parser.add_argument("--prefill", type=int, default=1000, help="tokens of the prefill prompt")
    parser.add_argument("--texts", type=int, default=16, help="texts embedded")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parse_args(parser, argv, smoke=dict(model="gritkit-tiny", rows=4, prefill=40, texts=4, repeats=1, threads=1))
    torch.set_num_threads(args.threads)
    result = {"model": args.model, "rows": args.rows, "prefill": args.prefill, "texts": args.texts,
              "repeats": args.repeats, "dtypes": {}}
    for dtype in (torch.float32, torch.bfloat16):
        problem = prepack_problem("cpu", dtype)
        if problem:
            print(f"{dtype}: skipped ({problem})")
            continue
        figures = measure(args, dtype)
        result["dtypes"][str(dtype).removeprefix("torch.")] = figures
        for figure, ratio in figures["speedup"].items():
            plain, packed = figures["seconds"]["plain"][figure], figures["seconds"]["prepacked"][figure]
            print(f"{dtype} {figure:>8}: plain {1000 * plain:8.1f} ms, prepacked {1000 * packed:8.1f} ms: {ratio:.2f}x")
        print(f"{dtype}: same tokens in the batched decode {figures['same_tokens']}, "
              f"min cosine of vectors {figures['min_cosine']:.6f}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
