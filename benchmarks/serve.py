"""Benchmark of ``gritkit serve``: does micro-batching pay, and how fast is chat?

    python benchmarks/serve.py                     # tiny Llama (hidden 256, 4 layers, vocab 8k)
    python benchmarks/serve.py --model path/to/model-dir

Starts ``gritkit serve`` as a subprocess on loopback (so the clients do not share the server's
Python interpreter), then measures, each ``--repeats`` times, reporting medians:

- embeddings/s with the texts sent one request at a time by one client (the baseline), and with
  ``--clients`` concurrent clients each sending one text per request (the server batches requests
  that arrive together); the ratio is what micro-batching buys; p50/p95 request latency of each;
- chat completion tokens/s of greedy generation, one request at a time.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx


def build_tiny_model(directory: Path, hidden: int, layers: int) -> Path:
    from gritkit.tiny import build_tiny_model as build, sample_corpus, train_tokenizer

    tokenizer = train_tokenizer(sample_corpus(), vocab_size=8192)
    path = directory / "tiny-llama"
    build("llama", tokenizer, hidden_size=hidden, num_layers=layers, initializer_range=0.2).save_pretrained(path)
    return path


def start_server(model: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "gritkit.cli", "serve", "--model", str(model), "--port", str(port),
                                "--model-name", "bench", "--max-queue", "256"],
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


def embed_concurrently(url: str, texts: list[str], clients: int) -> tuple[float, list[float]]:
    """The same texts, split over ``clients`` threads that each send one text per request."""
    latencies: list[float] = []
    lock, barrier = threading.Lock(), threading.Barrier(clients + 1)

    def run(share: list[str]) -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            client.get("/health")  # open the connection before the clock starts
            barrier.wait()
            for text in share:
                t0 = time.perf_counter()
                client.post("/v1/embeddings", json={"model": "bench", "input": text}).raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=run, args=(texts[i::clients],)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, latencies


def chat_tokens_per_second(url: str, prompts: list[str], max_tokens: int) -> float:
    tokens = 0
    with httpx.Client(base_url=url, timeout=300) as client:
        start = time.perf_counter()
        for prompt in prompts:
            response = client.post("/v1/chat/completions", json={
                "model": "bench", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                "temperature": 0})
            response.raise_for_status()
            tokens += response.json()["usage"]["completion_tokens"]
    return tokens / (time.perf_counter() - start)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model directory (default: build a tiny random Llama)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--texts", type=int, default=128)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chat-tokens", type=int, default=64)
    args = parser.parse_args()

    from gritkit.tiny import sample_corpus

    corpus = sample_corpus()
    texts = corpus[: args.texts]
    prompts = [line[:60] for line in corpus[-4:]]
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else build_tiny_model(Path(tmp), args.hidden, args.layers)
        process, url = start_server(model)
        try:
            embed_one_by_one(url, texts[:16])  # warm-up: first touch of memory, lazy imports
            chat_tokens_per_second(url, prompts[:1], 8)
            sequential, concurrent, chat, batch = [], [], [], []
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
                chat.append(chat_tokens_per_second(url, prompts, args.chat_tokens))
        finally:
            process.terminate()
            process.wait(timeout=30)
    seq, conc = statistics.median(sequential), statistics.median(concurrent)
    print(f"model: {args.model or f'tiny llama hidden {args.hidden}, {args.layers} layers, vocab 8k'}; "
          f"{len(texts)} texts; {args.repeats} repeats (medians); {os.cpu_count()} CPUs")
    print(f"embeddings, 1 client, one text per request:      {seq:8.1f} texts/s   "
          f"latency p50 {1000 * percentile(seq_lat, .5):6.1f} ms  p95 {1000 * percentile(seq_lat, .95):6.1f} ms")
    print(f"embeddings, {args.clients} clients, one text per request:    {conc:8.1f} texts/s   "
          f"latency p50 {1000 * percentile(conc_lat, .5):6.1f} ms  p95 {1000 * percentile(conc_lat, .95):6.1f} ms")
    print(f"batching ratio (concurrent / one at a time):     {conc / seq:8.2f}x   "
          f"(mean texts per forward pass with {args.clients} clients: {statistics.median(batch):.1f})")
    print(f"chat, greedy, one request at a time:             {statistics.median(chat):8.1f} completion tokens/s")


if __name__ == "__main__":
    main()
