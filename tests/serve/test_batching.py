"""Concurrency of the server: many clients at once, micro-batching, the bounded queue.

The answers under load must equal the answers of the library called one request at a time:
batching several requests into one forward pass must not change what each of them gets.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

openai = pytest.importorskip("openai")

from gritkit.model.gritlm import GritLM  # noqa: E402
from gritkit.serve import ServeConfig, create_app  # noqa: E402
from gritkit.serve.runner import ServerThread  # noqa: E402

CLIENTS = 16
SECONDS = 3.0


@pytest.fixture(scope="module")
def served(tiny_llama_dir):
    app = create_app(GritLM.from_pretrained(tiny_llama_dir),
                     ServeConfig(model_name="tiny", max_queue=64, max_batch_size=16, max_tokens_limit=16))
    with ServerThread(app) as url:
        yield url, app.state.worker


def test_concurrent_clients_get_the_sequential_answers(served, tiny_llama, corpus):
    url, worker = served
    texts = corpus[:24]
    prompts = ["What is a socket?", "Describe pathlib", "hello", "Why JSON?"]
    # The reference: the library, one text or prompt at a time.
    vectors = {t: tiny_llama.encode(t) for t in texts}
    answers = {p: tiny_llama.generate(p, max_new_tokens=12) for p in prompts}
    start = threading.Barrier(CLIENTS)
    worker.batches.clear()

    def client_loop(index: int) -> list[tuple]:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        done, step = [], 0
        start.wait()
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline:
            step += 1
            if (index + step) % 4 == 0:
                prompt = prompts[(index + step) % len(prompts)]
                response = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": prompt}],
                                                          max_tokens=12, temperature=0)
                done.append(("chat", prompt, response.choices[0].message.content))
            else:
                batch = [texts[(index * 7 + step + k) % len(texts)] for k in range(1 + step % 2)]
                response = client.embeddings.create(model="tiny", input=batch)
                done.append(("embed", batch, [d.embedding for d in response.data]))
        return done

    with ThreadPoolExecutor(CLIENTS) as pool:
        # .result() re-raises any failed request (openai raises on every 4xx/5xx): all were answered.
        results = [f.result() for f in [pool.submit(client_loop, i) for i in range(CLIENTS)]]
    kinds = [kind for done in results for kind, *_ in done]
    assert kinds.count("chat") >= 4 and kinds.count("embed") >= CLIENTS
    for done in results:
        for kind, given, got in done:
            if kind == "chat":
                assert got == answers[given]
            else:
                np.testing.assert_allclose(np.array(got), np.stack([vectors[t] for t in given]), rtol=0, atol=1e-5)
    assert max(worker.batches) > 2  # requests sent together really shared a forward pass


class _GatedModel:
    """A GritLM whose ``encode`` waits until the test opens the gate, to hold the worker busy."""

    def __init__(self, model):
        self._model, self.entered, self.gate = model, threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self._model, name)

    def encode(self, *args, **kwargs):
        self.entered.set()
        assert self.gate.wait(30)
        return self._model.encode(*args, **kwargs)


def test_full_queue_answers_503_and_one_bad_input_fails_alone(tiny_llama_dir, tiny_llama):
    model = _GatedModel(GritLM.from_pretrained(tiny_llama_dir))
    app = create_app(model, ServeConfig(model_name="tiny", max_queue=2, max_input_tokens=32))
    with ServerThread(app) as url, ThreadPoolExecutor(3) as pool:
        worker = app.state.worker

        def embed(text):
            return httpx.post(f"{url}/v1/embeddings", json={"model": "tiny", "input": text}, timeout=60)

        running = pool.submit(embed, "first")
        assert model.entered.wait(30)  # the worker is inside encode, blocked
        waiting = [pool.submit(embed, "second"), pool.submit(embed, "word " * 100)]
        deadline = time.monotonic() + 30
        while worker.queued < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        for refused in (embed("third"), httpx.post(f"{url}/v1/chat/completions", json={
                "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})):
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1" and refused.json()["error"]["code"] == "queue_full"
        model.gate.set()
        first, second, too_long = running.result(), waiting[0].result(), waiting[1].result()
    assert first.status_code == second.status_code == 200
    np.testing.assert_allclose(second.json()["data"][0]["embedding"], tiny_llama.encode("second"), atol=1e-6)
    # The over-long text was in the same batch as "second" and failed only its own request.
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "context_length_exceeded"
    assert list(worker.batches)[-1] == 1


def test_waiting_chats_decode_together_and_get_their_answers_alone(tiny_llama_dir, tiny_llama):
    model = _GatedModel(GritLM.from_pretrained(tiny_llama_dir))
    app = create_app(model, ServeConfig(model_name="tiny", max_running=4, max_tokens_limit=24))
    prompts = ["What is a socket?", "Describe pathlib in a sentence or two", "hello", "Why JSON?", "Explain os"]
    answers = {p: tiny_llama.generate(p, max_new_tokens=24) for p in prompts}
    with ServerThread(app) as url, ThreadPoolExecutor(len(prompts) + 1) as pool:
        worker = app.state.worker
        held = pool.submit(httpx.post, f"{url}/v1/embeddings", json={"model": "tiny", "input": "x"}, timeout=60)
        assert model.entered.wait(30)  # the worker is busy: the chats below all wait in the queue
        chats = [pool.submit(httpx.post, f"{url}/v1/chat/completions", timeout=60, json={
            "model": "tiny", "messages": [{"role": "user", "content": p}], "max_tokens": 24, "temperature": 0}) for p in prompts]
        deadline = time.monotonic() + 30
        while worker.queued < len(prompts) and time.monotonic() < deadline:
            time.sleep(0.01)
        model.gate.set()
        assert held.result().status_code == 200
        got = [c.result().json()["choices"][0]["message"]["content"] for c in chats]
    assert got == [answers[p] for p in prompts]
    assert max(worker.decoder.widths) == 4  # four rows shared decode steps; the fifth waited for room


def test_a_stepped_call_lets_embeddings_through_between_its_steps(tiny_llama):
    """A call whose fn returns a generator advances one step at a time: an embedding submitted
    while it runs is answered before it ends (it waits for the embedding, up to a bound)."""
    from gritkit.serve.batching import CallJob, EmbeddingJob, ModelWorker

    worker = ModelWorker(tiny_llama)
    worker.start()
    embedded = threading.Event()

    def steps():
        job = EmbeddingJob(["while stepping"], "")
        job.future.add_done_callback(lambda _: embedded.set())
        worker.submit_embedding(job)
        for count in range(10_000):
            if embedded.is_set():
                return ("served between steps", count, job.future.result()[0])
            yield
        return ("never served", count, None)

    try:
        verdict, count, vectors = worker.submit_call(CallJob(steps)).result(timeout=60)
        plain = worker.submit_call(CallJob(lambda: "plain")).result(timeout=60)

        def failing():
            yield
            raise ValueError("step two failed")
        with pytest.raises(ValueError, match="step two failed"):
            worker.submit_call(CallJob(failing)).result(timeout=60)
        assert worker.submit_call(CallJob(lambda: "still serving")).result(timeout=60) == "still serving"
    finally:
        worker.stop()
    assert verdict == "served between steps" and count >= 1 and plain == "plain"
    np.testing.assert_allclose(vectors[0], tiny_llama.encode("while stepping"), atol=1e-6)


class FakeDecoder:
    """A BatchDecoder's bookkeeping without a model: room, and the padded prompt tokens that the
    group being prefilled has left."""

    def __init__(self, running: bool = True, room: int = 8):
        self.running, self.room, self.left, self.rows = running, room, 0, 0

    @property
    def has_room(self) -> bool:
        return self.room > 0

    @property
    def prefilling(self) -> bool:
        return self.left > 0

    def start(self, jobs) -> None:
        self.rows, self.left = len(jobs), len(jobs) * max(job.prompt_tokens for job in jobs)

    def prefill(self, tokens: int) -> int:
        done = min(self.left, max(tokens // self.rows, 1) * self.rows)
        self.left -= done
        return done

    def step(self) -> None:
        pass


def test_the_worker_serves_embeddings_between_short_prefill_passes_and_never_stalls_decoding(tiny_llama, monkeypatch):
    """The scheduling rule itself: each cycle is the newcomers' prefill (those waiting together as
    one group, within the batch's room, SLICE_TOKENS per cycle; in passes of prefill_pass_tokens
    while embeddings keep arriving) with waiting embedding batches first and after every pass
    (SLICE_TOKENS of them per cycle), then the decode step; so an embedding never waits behind
    newcomers that arrived first, nor behind more than one short pass of their prompts, and a
    flood of embeddings neither starves newcomers nor stalls decoding."""
    import math

    from gritkit.serve import batching
    from gritkit.serve.batching import SLICE_TOKENS, EmbeddingJob, ModelWorker
    from gritkit.serve.generation import GenerationJob

    monkeypatch.setattr(batching, "EMBEDDING_RECENT_S", 1e9)  # embeddings stay recent however slow the test

    PASS = 64  # not the default (32): the setting is the one used
    worker = ModelWorker(tiny_llama, batch_wait_s=0.0, prefill_pass_tokens=PASS)
    worker.decoder = FakeDecoder()  # a batch is decoding
    newcomers = [GenerationJob([{"role": "user", "content": f"chat {i}"}], 4, 0.0, 1.0, None, [], print,
                               prompt_tokens=10) for i in range(5)]

    def next_action():
        with worker._cond:
            action, payload = worker._next_action()
        if action == worker._run_embeddings:  # not run: only the order is checked
            return "embed"
        action(payload)
        if action == worker._step:
            return "step"
        if action == worker._prefill_pass:
            return "pass"
        assert action == worker._start_newcomers  # a new group, and its first pass
        return "prefill", [next(i for i, job in enumerate(newcomers) if job is taken) for taken in payload]

    for job in newcomers[:2]:
        worker.submit_generation(job)
    worker.submit_embedding(EmbeddingJob(["text"], ""))  # arrives after both newcomers
    assert next_action() == "embed"  # before the newcomers that arrived first
    assert next_action() == ("prefill", [0, 1])  # both together, in one pass (20 tokens)
    assert next_action() == "step"

    # No more newcomers than the batch has room for.
    worker.decoder.room = 1
    for job in newcomers[:2]:
        worker.submit_generation(job)
    assert next_action() == ("prefill", [0])
    worker.decoder.room = 0  # what admitting it did
    assert next_action() == "step"
    worker.decoder.room = 8  # a row ended
    assert next_action() == ("prefill", [1])
    assert next_action() == "step"

    # A long prompt goes in passes, with an embedding that arrives meanwhile between two of them ...
    newcomers[2].prompt_tokens = 3 * PASS
    worker.submit_generation(newcomers[2])
    assert next_action() == ("prefill", [2])
    worker.submit_embedding(EmbeddingJob(["text"], ""))
    assert [next_action() for _ in range(4)] == ["embed", "pass", "pass", "step"]
    # ... and no more than SLICE_TOKENS of prefill between two decode steps.
    passes = SLICE_TOKENS // PASS
    newcomers[3].prompt_tokens = SLICE_TOKENS + PASS
    worker.submit_generation(newcomers[3])
    assert [next_action() for _ in range(passes + 3)] == [("prefill", [3])] + ["pass"] * (passes - 1) + [
        "step", "pass", "step"]

    # A flood of one-text embeddings, one arriving during every action: they go between the passes,
    # and each cycle still prefills its newcomers and ends with a step.
    newcomers[4].prompt_tokens = 3 * PASS
    worker.submit_generation(newcomers[4])
    seen = []
    for _ in range(9):
        worker.submit_embedding(EmbeddingJob(["flood"], ""))
        seen.append(next_action())
    assert seen == ["embed", ("prefill", [4]), "embed", "pass", "embed", "pass", "embed", "step", "embed"]
    worker._embed.clear()
    assert next_action() == "step"

    # A long embedding request's slice fills a cycle's embedding budget: the rest of the cycle's
    # prefill and its step come before the next slice.
    long_text = "word " * SLICE_TOKENS
    worker.submit_generation(newcomers[4])
    worker.submit_embedding(EmbeddingJob([long_text] * 3, ""))
    assert next_action() == "embed" and worker._embedded >= SLICE_TOKENS
    assert [next_action() for _ in range(5)] == [("prefill", [4]), "pass", "pass", "step", "embed"]
    worker._embed.clear()

    # No embedding for a while: a prompt goes in one pass, up to the cycle's SLICE_TOKENS.
    worker._embedding_seen = -math.inf
    newcomers[1].prompt_tokens = SLICE_TOKENS + PASS
    worker.submit_generation(newcomers[4])
    worker.submit_generation(newcomers[1])
    # the first prompt whole (96 tokens), the second's first 160, the step, then its last 128
    assert [next_action() for _ in range(5)] == [("prefill", [4]), ("prefill", [1]), "step", "pass", "step"]

    # Nothing decoding: the same cycles (the step does nothing), so a flood of embeddings does
    # not starve a newcomer on an idle server either.
    worker.decoder = FakeDecoder(running=False)
    worker._last, worker._prefilled, worker._embedded = "step", 0, 0
    newcomers[0].prompt_tokens = 10
    worker.submit_generation(newcomers[0])
    seen = []
    for _ in range(4):
        worker.submit_embedding(EmbeddingJob(["idle"], ""))
        seen.append(next_action())
    assert seen == ["embed", ("prefill", [0]), "embed", "step"]


def test_an_embedding_batch_waits_for_stragglers_only_on_an_idle_worker(tiny_llama):
    """A busy worker gathers embeddings during the action in progress, so waiting for stragglers
    would only delay the waiting embedding and the decode batch behind it."""
    import threading
    from types import SimpleNamespace

    from gritkit.serve.batching import EmbeddingJob, ModelWorker

    def batch_sizes(running: bool) -> int:
        worker = ModelWorker(tiny_llama, batch_wait_s=1.0)
        worker.decoder = SimpleNamespace(running=running, prefilling=False, has_room=True)
        worker.submit_embedding(EmbeddingJob(["first"], ""))
        straggler = threading.Timer(0.2, lambda: worker.submit_embedding(EmbeddingJob(["straggler"], "")))
        straggler.start()
        with worker._cond:
            jobs = worker._take_embedding_batch()
        straggler.join()
        return len(jobs)

    assert batch_sizes(running=False) == 2  # idle: the straggler joins the batch
    assert batch_sizes(running=True) == 1  # decoding: the batch goes at once


def test_a_long_embedding_request_is_taken_in_slices_of_at_most_slice_tokens(tiny_llama):
    """Texts join a batch while it stays within SLICE_TOKENS (a longer text would go alone), so
    decode steps run between the slices of a long request; every text is embedded once, in order,
    and the vectors are those of embedding the request whole."""
    from types import SimpleNamespace

    from gritkit.serve.batching import SLICE_TOKENS, EmbeddingJob, ModelWorker

    worker = ModelWorker(tiny_llama, batch_wait_s=0.0, max_input_tokens=2048)
    worker.decoder = SimpleNamespace(running=True, prefilling=False, has_room=True)
    texts = [" ".join(["word"] * n) for n in (20, 150, 5, 220, 240, 10, 600, 15, 120, 200)]
    job = EmbeddingJob(texts, "")
    worker.submit_embedding(job)
    slices = []
    while worker._embed:
        with worker._cond:
            taken = worker._take_embedding_batch()
        assert len(taken) == 1  # one job: one slice per batch
        worker._run_embeddings(taken)
        slices.append((taken[0].start, taken[0].stop))
    lengths = job.lengths
    assert len(slices) >= 3
    assert [start for start, _ in slices] == [0] + [stop for _, stop in slices[:-1]]  # in order, each text once
    assert slices[-1][1] == len(texts)
    for start, stop in slices:
        assert sum(lengths[start:stop]) <= SLICE_TOKENS or stop - start == 1
        if stop < len(texts):  # the next text would not have fitted
            assert sum(lengths[start:stop + 1]) > SLICE_TOKENS
    vectors, tokens = job.future.result()
    assert tokens == sum(lengths)
    np.testing.assert_allclose(vectors, tiny_llama.encode(texts, max_length=2048, show_progress_bar=False),
                               atol=1e-5)
