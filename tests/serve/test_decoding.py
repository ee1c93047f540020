"""The server's batched decoder against the library: rows that join and leave a running batch get
exactly the tokens they would get alone (greedy: transformers' own ``generate``)."""

from __future__ import annotations

import threading

import pytest
import torch

from gritkit.model.prepacked_linear import prepack_linears
from gritkit.model.sampling import next_token
from gritkit.model.tiny import build_tiny_model
from gritkit.serve.decoding import BatchDecoder, batchable
from gritkit.serve.generation import GenerationJob

PROMPTS = ["What does os.path.join do?", "Explain the json module in a few words, please", "hi",
           "Describe pathlib", "Why would anyone use sockets instead of pipes?"]


class Recorder:
    """A job's ``emit``: keeps every event, for the assertions."""

    def __init__(self):
        self.events = []

    def __call__(self, event):
        self.events.append(event)

    @property
    def result(self):
        done = [value for kind, value in self.events if kind == "done"]
        assert len(done) == 1, self.events
        return done[0]

    @property
    def streamed(self) -> str:
        return "".join(value for kind, value in self.events if kind == "delta")


def job(prompt: str, max_new_tokens: int = 16, temperature: float = 0.0, seed: int | None = None, stop=(),
        **options):
    return GenerationJob([{"role": "user", "content": prompt}], max_new_tokens, temperature, 0.9, seed,
                         list(stop), Recorder(), **options)


def run(decoder: BatchDecoder, jobs: list[GenerationJob], join_every: int = 0) -> None:
    """Admit ``jobs`` (as many as there is room for in one prefill pass whenever there is room, or
    one every ``join_every`` decode steps) and decode to the end."""
    waiting = list(jobs)
    steps = 0
    while waiting or decoder.running:
        joining = not join_every or not decoder.running or steps % join_every == 0
        if waiting and joining and decoder.has_room:
            count = 1 if join_every else decoder.room
            decoder.admit(waiting[:count])
            del waiting[:count]
            if not join_every:
                continue
        if decoder.running:
            decoder.step()
            steps += 1


@pytest.fixture(scope="module", params=["llama", "qwen2", "llama-prepacked"])
def model(request, tokenizer):
    if request.param.startswith("llama"):
        model = build_tiny_model("llama", tokenizer, hidden_size=64, num_layers=2, initializer_range=0.2)
        if request.param == "llama-prepacked":  # the server's default on a CPU (gritkit serve)
            model.model.requires_grad_(False)
            prepack_linears(model.model)
        return model
    return build_tiny_model("qwen2", tokenizer, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                            initializer_range=0.2)


@pytest.mark.parametrize("join_every", [0, 3])
def test_batched_greedy_rows_equal_generate_alone(model, join_every):
    assert batchable(model)
    decoder = BatchDecoder(model, max_running=4, max_input_tokens=200)
    jobs = [job(p, max_new_tokens=10 + 3 * i) for i, p in enumerate(PROMPTS)]
    run(decoder, jobs, join_every)
    assert max(decoder.widths) >= 3  # rows really shared decode steps
    for j in jobs:
        result = j.emit.result
        expected = model.generate(j.messages, max_new_tokens=j.max_new_tokens)
        assert result.text == expected
        assert j.emit.streamed == result.text
        assert result.prompt_tokens == len(model.chat_input_ids(j.messages))
        assert result.finish_reason == ("length" if result.completion_tokens == j.max_new_tokens else "stop")
    assert decoder.running == 0 and decoder.cache is None
    # Each step chose one token per running row; each row's first token came from its prefill.
    assert decoder.tokens == sum(j.emit.result.completion_tokens - 1 for j in jobs)


def test_the_batch_cache_loses_columns_nobody_uses(model):
    decoder = BatchDecoder(model, max_running=4, max_input_tokens=200)
    long, short = job(PROMPTS[4], max_new_tokens=2), job(PROMPTS[2], max_new_tokens=12)
    decoder.admit([long])
    decoder.admit([short])
    long_length = len(model.chat_input_ids(long.messages))
    assert decoder.mask.shape == (2, long_length)
    assert decoder.mask[1].sum() == len(model.chat_input_ids(short.messages))
    decoder.step()  # the long prompt's row ends here; the padding it forced on the short one goes
    assert decoder.running == 1
    assert bool(decoder.mask.all()) and decoder.mask.shape[1] == decoder.cache.get_seq_length()
    assert decoder.mask.shape[1] == len(model.chat_input_ids(short.messages)) + 1


def test_seeded_sampling_is_the_same_alone_and_batched(model):
    alone = job(PROMPTS[1], max_new_tokens=20, temperature=0.9, seed=1234)
    run(BatchDecoder(model, max_running=1, max_input_tokens=200), [alone])
    again = job(PROMPTS[1], max_new_tokens=20, temperature=0.9, seed=1234)
    others = [job(p, max_new_tokens=20, temperature=0.9, seed=i) for i, p in enumerate(PROMPTS)]
    run(BatchDecoder(model, max_running=6, max_input_tokens=200), [others[0], others[4], again, *others[1:4]],
        join_every=2)
    other_seed = job(PROMPTS[1], max_new_tokens=20, temperature=0.9, seed=99)
    run(BatchDecoder(model, max_running=1, max_input_tokens=200), [other_seed])
    assert alone.emit.result.text == again.emit.result.text
    assert alone.emit.result.text != other_seed.emit.result.text  # the seed really drives the sampling
    assert alone.emit.result.text != model.generate(PROMPTS[1], max_new_tokens=20)  # sampling happened


def test_top_p_keeps_the_smallest_set_that_reaches_it():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    generator = torch.Generator().manual_seed(0)
    assert {next_token(logits, 1.0, 0.5, generator) for _ in range(200)} == {0}
    assert {next_token(logits, 1.0, 0.6, generator) for _ in range(400)} == {0, 1}
    assert {next_token(logits, 1.0, 0.85, generator) for _ in range(400)} == {0, 1, 2}
    assert next_token(logits, 0.0, 0.1, generator) == 0


def test_stop_strings_cancellation_and_limits(model):
    free = model.generate(PROMPTS[0], max_new_tokens=16)
    stop = free[4:7]
    stopped = job(PROMPTS[0], stop=[stop])
    cancelled = job(PROMPTS[3], max_new_tokens=30)
    too_long = job("word " * 300)
    untouched = job(PROMPTS[2])

    def cancel_after_first_delta(event, record=cancelled.emit):
        record(event)
        if event[0] == "delta":
            cancelled.cancelled.set()

    cancelled.emit, recorder = cancel_after_first_delta, cancelled.emit
    run(BatchDecoder(model, max_running=4, max_input_tokens=200), [stopped, cancelled, too_long, untouched])
    assert stopped.emit.result.text == free[: free.index(stop)] and stopped.emit.result.finish_reason == "stop"
    assert stopped.emit.streamed == stopped.emit.result.text
    assert recorder.result.completion_tokens < 30
    kind, error = too_long.emit.events[-1]
    assert kind == "error" and error.status == 400 and "200" in error.message
    assert untouched.emit.result.text == model.generate(PROMPTS[2], max_new_tokens=16)


def test_a_sliding_window_model_decodes_one_request_at_a_time(tokenizer):
    model = build_tiny_model("mistral", tokenizer, hidden_size=64, num_layers=2, sliding_window=8,
                             initializer_range=0.2)
    if batchable(model):
        pytest.skip("this transformers builds no sliding-window cache layer for mistral")
    decoder = BatchDecoder(model, max_running=8, max_input_tokens=200)
    assert decoder.max_running == 1
    jobs = [job(p, max_new_tokens=12) for p in PROMPTS[:2]]
    run(decoder, jobs)
    for j in jobs:
        assert j.emit.result.text == model.generate(j.messages, max_new_tokens=12)


def test_jobs_cancelled_before_they_start_are_skipped(model):
    decoder = BatchDecoder(model, max_running=4, max_input_tokens=200)
    j = job(PROMPTS[0])
    j.cancelled = threading.Event()
    j.cancelled.set()
    decoder.admit([j])
    assert decoder.running == 0 and j.emit.events == []


class _Override:
    """``inner`` with some attributes replaced."""

    def __init__(self, inner, **attributes):
        self._inner, self._attributes = inner, attributes

    def __getattr__(self, name):
        return self._attributes[name] if name in self._attributes else getattr(self._inner, name)


def test_unstreamed_jobs_send_only_the_end_and_ignore_eos_runs_to_the_limit(model):
    # The random model never says EOS early; make its 4th greedy token of PROMPTS[0] the EOS.
    first = job(PROMPTS[0], max_new_tokens=8)
    run(BatchDecoder(model, max_running=1, max_input_tokens=200), [first])
    eos = model.tokenizer(first.emit.result.text, add_special_tokens=False)["input_ids"]
    eos_model = _Override(model, tokenizer=_Override(model.tokenizer, eos_token_id=eos[3]))
    streamed = [job(p, max_new_tokens=40) for p in PROMPTS]
    quiet = [job(p, max_new_tokens=40, stream=False) for p in PROMPTS]
    past_eos = [job(p, max_new_tokens=40, ignore_eos=True) for p in PROMPTS]
    run(BatchDecoder(eos_model, max_running=8, max_input_tokens=200), [*streamed, *quiet, *past_eos])
    for a, b, c in zip(streamed, quiet, past_eos):
        assert [kind for kind, _ in b.emit.events] == ["start", "done"]
        assert b.emit.result == a.emit.result
        assert c.emit.result.completion_tokens == 40 and c.emit.result.finish_reason == "length"
        assert c.emit.result.text.startswith(a.emit.result.text)
    assert streamed[0].emit.result.finish_reason == "stop" and streamed[0].emit.result.completion_tokens < 40


def test_a_grouped_prefill_leaves_the_batch_as_one_at_a_time_admissions_do(model):
    """Prompts prefilled together (left-padded, one pass) give the rows, mask and cache that
    admitting them one by one gives, and a row that ends on its first token leaves at once."""
    together, alone = BatchDecoder(model, 4, 200), BatchDecoder(model, 4, 200)
    ends_at_once = job(PROMPTS[3], max_new_tokens=1)
    together.admit([job(PROMPTS[4]), ends_at_once, job(PROMPTS[2]), job(PROMPTS[0])])
    for prompt in (PROMPTS[4], PROMPTS[2], PROMPTS[0]):
        alone.admit([job(prompt)])
    assert ends_at_once.emit.result.completion_tokens == 1 and together.running == 3
    assert [r.last for r in together.rows] == [r.last for r in alone.rows]
    assert torch.equal(together.mask, alone.mask)
    for mine, theirs in zip(together.cache.layers, alone.cache.layers):
        real = alone.mask.bool()
        torch.testing.assert_close(mine.keys.transpose(1, 2)[real], theirs.keys.transpose(1, 2)[real])
        torch.testing.assert_close(mine.values.transpose(1, 2)[real], theirs.values.transpose(1, 2)[real])


def test_decode_steps_write_the_batch_cache_in_place(model):
    """A step adds one column to each layer's buffer without copying it (what DynamicLayer's
    torch.cat did every step); the views hold what a DynamicCache would."""
    from transformers import DynamicCache

    decoder = BatchDecoder(model, 4, 200)
    decoder.admit([job(PROMPTS[1], max_new_tokens=30), job(PROMPTS[0], max_new_tokens=30)])
    layer = decoder.cache.layers[0]
    buffer = layer._key_buffer.data_ptr()
    for _ in range(5):
        decoder.step()
    assert layer._key_buffer.data_ptr() == buffer and layer.keys.data_ptr() == buffer
    assert decoder.cache.get_seq_length() == decoder.mask.shape[1]
    # The same rows through a plain DynamicCache, fed the tokens the batch chose (all but the
    # last, which the next step feeds).
    reference = DynamicCache(config=model.model.config)
    width = decoder.mask.shape[1]
    ids = []
    for row in decoder.rows:
        prompt = model.chat_input_ids(row.job.messages)
        ids.append([0] * (width - len(prompt) - len(row.deltas.ids) + 1) + prompt + row.deltas.ids[:-1])
    mask = decoder.mask
    with torch.inference_mode():
        model.model(input_ids=torch.tensor(ids), attention_mask=mask,
                    position_ids=(mask.cumsum(1) - 1).clamp(min=0), cache=reference, use_cache=True)
    real = mask.bool()
    torch.testing.assert_close(layer.keys.transpose(1, 2)[real], reference.layers[0].keys.transpose(1, 2)[real])


@pytest.mark.parametrize("pass_tokens", [1, 7])
def test_a_group_prefilled_a_few_columns_at_a_time_between_decode_steps_gets_generates_tokens(model, pass_tokens):
    """Chunked prefill: newcomers' prompts go through the model ``pass_tokens`` padded tokens at a
    time (at least one column), while the running batch takes decode steps in between."""
    decoder = BatchDecoder(model, max_running=5, max_input_tokens=200)
    running = [job(PROMPTS[0], max_new_tokens=40)]
    decoder.admit(running)
    group = [job(p, max_new_tokens=8 + i) for i, p in enumerate(PROMPTS[1:])]
    decoder.start(group)
    assert decoder.room == 0 and decoder.prefilling
    passes = 0
    while decoder.prefilling:
        tokens = decoder.prefill(pass_tokens)
        assert 0 < tokens <= max(pass_tokens, len(group))
        passes += 1
        if decoder.running:
            decoder.step()
    widest = max(len(model.chat_input_ids(j.messages)) for j in group)
    assert passes == (widest if pass_tokens < len(group) else -(-widest // (pass_tokens // len(group))))
    while decoder.running:
        decoder.step()
    for j in running + group:
        assert j.emit.result.text == model.generate(j.messages, max_new_tokens=j.max_new_tokens)
