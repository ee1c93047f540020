"""Benchmark of ``gritkit serve``: what micro-batched embeddings and batched decoding buy.

    python benchmarks/serve.py                     # gritkit-tiny
    python benchmarks/serve.py --model path/to/model-dir
    python benchmarks/serve.py --json              # ends with one JSON line of the headline ratios
    python benchmarks/serve.py --smoke --json      # 8 texts, 4 clients, 16 chat tokens, 1 repeat

Starts ``gritkit serve`` as a subprocess on loopback (so the clients do not share the server's
Python interpreter) and measures, reporting medians over ``--repeats``:

- embeddings/s with the texts sent one request at a time by one client (the baseline), and with
  ``--clients`` concurrent clients each sending one text per request (the server batches requests
  that arrive together); the ratio is what micro-batching buys; p50/p95 request latency of each;
- chat: generated tokens/s and p50/p95 request latency with 1, 4 and 16 concurrent clients
  (greedy, exactly ``--chat-tokens`` tokens each: ``ignore_eos``, as vLLM's benchmarks do), on
  a server that decodes up to 16 requests in one
  batch and on a second server started with ``--max-running 1`` (one request at a time);
- embedding latency while 16 chat clients keep the batched server generating, against the same
  one-text requests on the idle server (p95 ratio), and the chat tokens/s meanwhile;
- one long embedding request (``--long-texts`` texts of 20-120 words) on the idle server and while
  16 chat clients generate: its latency, and the chat tokens/s decoded while it ran (the server's
  ``decoded_tokens``), against their rate just before it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import parse_args  # noqa: E402


def start_server(model: str, max_running: int = 16, threads: int = 0, extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "gritkit.cli", "serve", "--model", str(model), "--port", str(port),
                                "--model-name", "bench", "--max-queue", "256", "--max-running", str(max_running),
                                "--threads", str(threads), *extra],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("gritkit serve exited during start-up")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit("gritkit serve did not start within 180 s")


def embed_one_by_one(url: str, texts: list[str]) -> tuple[float, list[float]]:
    """(wall seconds, per-request latencies) for one client sending one text per request."""
    latencies = []
    with httpx.Client(base_url=url, timeout=120) as client:
        start = time.perf_counter()
        for text in texts:
            t0 = time.perf_counter()
            client.post("/v1/embeddings", json={"model": "bench", "input": text}).raise_for_status()
            latencies.append(time.perf_counter() - t0)
    return time.perf_counter() - start, latencies


def embedding_counters(url: str) -> tuple[int, int]:
    """(texts embedded, forward passes) since the server started, from /health."""
    health = httpx.get(f"{url}/health").json()
    return health["embedded_texts"], health["embedding_passes"]


def run_clients(url: str, clients: int, body, timeout: float = 600) -> float:
    """Wall seconds of ``clients`` threads running ``body(index, client)`` together, each with
    its own connection, opened before the clock starts."""
    barrier = threading.Barrier(clients + 1)

    def run(index: int) -> None:
        with httpx.Client(base_url=url, timeout=timeout) as client:
            client.get("/health")
            barrier.wait()
            body(index, client)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def embed_concurrently(url: str, texts: list[str], clients: int) -> tuple[float, list[float]]:
    """The same texts, split over ``clients`` threads that each send one text per request."""
    latencies: list[float] = []
    lock = threading.Lock()

    def body(index: int, client: httpx.Client) -> None:
        for text in texts[index::clients]:
            t0 = time.perf_counter()
            client.post("/v1/embeddings", json={"model": "bench", "input": text}).raise_for_status()
            with lock:
                latencies.append(time.perf_counter() - t0)

    return run_clients(url, clients, body, timeout=120), latencies


def chat_clients(url: str, prompts: list[str], clients: int, requests: int, max_tokens: int,
                 stop: threading.Event | None = None) -> tuple[float, list[float]]:
    """(generated tokens/s, per-request latencies) of ``clients`` threads sending chat requests:
    ``requests`` each, or (with ``stop``) until ``stop`` is set."""
    latencies, tokens = [], [0]
    lock = threading.Lock()

    def body(index: int, client: httpx.Client) -> None:
        sent = 0
        while (stop is None and sent < requests) or (stop is not None and not stop.is_set()):
            prompt = prompts[(index + sent) % len(prompts)]
            t0 = time.perf_counter()
            response = client.post("/v1/chat/completions", json={
                "model": "bench", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                "temperature": 0, "ignore_eos": True})
            response.raise_for_status()
            sent += 1
            with lock:
                latencies.append(time.perf_counter() - t0)
                tokens[0] += response.json()["usage"]["completion_tokens"]

    wall = run_clients(url, clients, body)  # before reading tokens: the threads fill it
    return tokens[0] / wall, latencies


def chat_table(url: str, prompts: list[str], args) -> dict[int, dict]:
    """Generated tokens/s and latency percentiles for 1, 4 and 16 clients (medians over repeats)."""
    rows = {}
    for clients in (1, 4, 16):
        rates, latencies = [], []
        for _ in range(args.repeats):
            rate, lat = chat_clients(url, prompts, clients, max(1, 16 // clients), args.chat_tokens)
            rates.append(rate)
            latencies += lat
        rows[clients] = {"tokens_per_s": statistics.median(rates), "p50_s": percentile(latencies, .5),
                         "p95_s": percentile(latencies, .95)}
    return rows


def embedding_latency_under_load(url: str, texts: list[str], prompts: list[str],
                                 args) -> tuple[list[float], list[float], float]:
    """One-text embedding latencies on the idle server, then while 16 chat clients generate; and
    the chat tokens/s decoded while those embeddings ran."""
    _, idle = embed_one_by_one(url, texts)
    stop = threading.Event()
    load = threading.Thread(target=chat_clients, args=(url, prompts, 16, 0, args.chat_tokens, stop))
    load.start()
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/health").json()["running_generations"] < 8 and time.monotonic() < deadline:
        time.sleep(0.05)  # let the batch fill before measuring
    before = httpx.get(f"{url}/health").json()["decoded_tokens"]
    wall, loaded = embed_one_by_one(url, texts)
    chat_rate = (httpx.get(f"{url}/health").json()["decoded_tokens"] - before) / wall
    stop.set()
    load.join()
    return idle, loaded, chat_rate


def long_request_under_load(url: str, texts: list[str], prompts: list[str], args) -> dict:
    """One request of ``texts``, idle and then while 16 chat clients generate: its seconds, and the
    chat tokens/s while it ran against the second just before it."""

    def decoded() -> int:
        return httpx.get(f"{url}/health").json()["decoded_tokens"]

    def embed() -> float:
        start = time.perf_counter()
        httpx.post(f"{url}/v1/embeddings", json={"model": "bench", "input": texts}, timeout=600).raise_for_status()
        return time.perf_counter() - start

    idle = embed()
    stop = threading.Event()
    load = threading.Thread(target=chat_clients, args=(url, prompts, 16, 0, args.chat_tokens, stop))
    load.start()
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/health").json()["running_generations"] < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    before = decoded()
    time.sleep(1.0)
    during = decoded()
    loaded = embed()
    after = decoded()
    stop.set()
    load.join()
    return {"texts": len(texts), "idle_s": idle, "under_load_s": loaded, "chat_tok_s_before": during - before,
            "chat_tok_s_during": (after - during) / loaded}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gritkit-tiny", help="model directory or shipped name")
    parser.add_argument("--texts", type=int, default=128)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chat-tokens", type=int, default=64)
    parser.add_argument("--long-texts", type=int, default=64, help="texts of the one long embedding request")
    parser.add_argument("--threads", type=int, default=0,
                        help="the servers' --threads (default 0: the server's own choice, one core fewer than usable)")
    parser.add_argument("--prefill-pass-tokens", type=int, default=None,
                        help="the servers' --prefill-pass-tokens (default: the server's own)")
    parser.add_argument("--no-prepack", action="store_true",
                        help="the servers' --no-prepack (PyTorch's own linear kernels; default: prepacked on a CPU)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the headline figures")
    args = parse_args(parser, argv, smoke=dict(texts=8, clients=4, repeats=1, chat_tokens=16, long_texts=8))

    from gritkit.model.tiny import sample_corpus

    corpus = sample_corpus()
    texts = corpus[: args.texts]
    prompts = [f"Explain this in detail: {line[:60]}" for line in corpus[-16:]]
    extra = (("--no-prepack",) if args.no_prepack else ()) + (
        ("--prefill-pass-tokens", str(args.prefill_pass_tokens)) if args.prefill_pass_tokens else ())
    process, url = start_server(args.model, threads=args.threads, extra=extra)
    try:
        embed_one_by_one(url, texts[:16])  # warm-up: first touch of memory, lazy imports
        chat_clients(url, prompts, 4, 1, 8)
        sequential, concurrent, batch = [], [], []
        seq_lat, conc_lat = [], []
        for _ in range(args.repeats):
            wall, lat = embed_one_by_one(url, texts)
            sequential.append(len(texts) / wall)
            seq_lat += lat
            before = embedding_counters(url)
            wall, lat = embed_concurrently(url, texts, args.clients)
            after = embedding_counters(url)
            concurrent.append(len(texts) / wall)
            conc_lat += lat
            batch.append((after[0] - before[0]) / (after[1] - before[1]))
        batched = chat_table(url, prompts, args)
        idle, loaded, chat_with_embeddings = embedding_latency_under_load(url, texts[:64], prompts, args)
        words = " ".join(corpus).split()
        long_texts = [" ".join(words[i * 97: i * 97 + 20 + (i * 37) % 100]) for i in range(args.long_texts)]
        long_request = long_request_under_load(url, long_texts, prompts, args)
    finally:
        process.terminate()
        process.wait(timeout=30)
    process, url = start_server(args.model, max_running=1, threads=args.threads, extra=extra)
    try:
        chat_clients(url, prompts, 4, 1, 8)
        one_at_a_time = chat_table(url, prompts, args)
    finally:
        process.terminate()
        process.wait(timeout=30)

    seq, conc = statistics.median(sequential), statistics.median(concurrent)
    print(f"model: {args.model}; {len(texts)} texts; {args.repeats} repeats (medians); {os.cpu_count()} CPUs; "
          f"server --threads {args.threads or 'default (one core fewer than usable)'}"
          f"{' --no-prepack' if args.no_prepack else ''}")
    print(f"embeddings, 1 client, one text per request:      {seq:8.1f} texts/s   "
          f"latency p50 {1000 * percentile(seq_lat, .5):6.1f} ms  p95 {1000 * percentile(seq_lat, .95):6.1f} ms")
    print(f"embeddings, {args.clients} clients, one text per request:    {conc:8.1f} texts/s   "
          f"latency p50 {1000 * percentile(conc_lat, .5):6.1f} ms  p95 {1000 * percentile(conc_lat, .95):6.1f} ms")
    print(f"batching ratio (concurrent / one at a time):     {conc / seq:8.2f}x   "
          f"(mean texts per forward pass with {args.clients} clients: {statistics.median(batch):.1f})")
    print(f"\nchat, greedy, {args.chat_tokens} tokens each: generated tokens/s, request latency p50/p95")
    print(f"{'clients':>8} {'batched tok/s':>14} {'p50 s':>7} {'p95 s':>7} {'one-at-a-time tok/s':>20} "
          f"{'p50 s':>7} {'p95 s':>7} {'speed-up':>9}")
    for clients, row in batched.items():
        base = one_at_a_time[clients]
        print(f"{clients:>8} {row['tokens_per_s']:>14.1f} {row['p50_s']:>7.2f} {row['p95_s']:>7.2f} "
              f"{base['tokens_per_s']:>20.1f} {base['p50_s']:>7.2f} {base['p95_s']:>7.2f} "
              f"{row['tokens_per_s'] / base['tokens_per_s']:>8.2f}x")
    ratio = percentile(loaded, .95) / percentile(idle, .95)
    print(f"\nembedding latency, one text per request: idle p50 {1000 * percentile(idle, .5):.1f} ms, "
          f"p95 {1000 * percentile(idle, .95):.1f} ms; with 16 chat clients generating p50 "
          f"{1000 * percentile(loaded, .5):.1f} ms, p95 {1000 * percentile(loaded, .95):.1f} ms ({ratio:.2f}x); "
          f"the chats decoded {chat_with_embeddings:.1f} tok/s meanwhile")
    print(f"one request of {long_request['texts']} texts: idle {long_request['idle_s']:.2f} s, with 16 chat clients "
          f"{long_request['under_load_s']:.2f} s; chat tok/s while it ran {long_request['chat_tok_s_during']:.1f} "
          f"(the second before: {long_request['chat_tok_s_before']:.1f})")
    if args.json:
        print(json.dumps({"long_embedding_request": long_request, "generation_speedup_16": batched[16]["tokens_per_s"] / one_at_a_time[16]["tokens_per_s"],
                          "embedding_p95_ratio_under_load": ratio,
                          "chat": {"batched": batched, "one_at_a_time": one_at_a_time},
                          "embedding_p95_idle_s": percentile(idle, .95),
                          "embedding_p95_under_load_s": percentile(loaded, .95),
                          "chat_tok_s_with_embeddings": chat_with_embeddings,
                          "prefill_pass_tokens": args.prefill_pass_tokens,
                          "micro_batching_ratio": conc / seq, "server_threads": args.threads,
                          "prepack": not args.no_prepack}))


if __name__ == "__main__":
    main()
