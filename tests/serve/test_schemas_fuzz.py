"""Fuzz every operation of the server's own OpenAPI schema (schemathesis): never a 5xx.

Valid bodies (positive mode) and bodies that break the schema (negative mode) are sent over real
HTTP to a server with an API key; each operation gets a bounded number of cases so the run stays
short. Whatever comes in, the answer is below 500 and the error body is OpenAI-shaped.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from gritkit.model.gritlm import GritLM  # noqa: E402
from gritkit.serve import ServeConfig, create_app  # noqa: E402
from gritkit.serve.runner import ServerThread  # noqa: E402

KEY = "fuzz-key"
EXAMPLES = 10  # per operation and mode


@pytest.fixture(scope="module")
def served(tiny_llama_dir):
    config = ServeConfig(model_name="tiny", api_key=KEY, max_input_tokens=64, max_batch_size=4, max_tokens_limit=4)
    app = create_app(GritLM.from_pretrained(tiny_llama_dir), config)
    with ServerThread(app) as url:
        yield app, url


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_server_errors(served, mode):
    app, url = served
    schema = schemathesis.openapi.from_dict(app.openapi())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/embeddings", "/v1/chat/completions", "/v1/completions"}
    headers = {"Authorization": f"Bearer {KEY}"}
    seen: dict[int, int] = {}
    if mode == "negative":  # only bodies can break the schema; GET /health has nothing to break
        operations = [op for op in operations if op.method.upper() == "POST"]
    for operation in operations:
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode)))
        def check(case):
            response = case.call(base_url=url, headers=headers, timeout=60)
            assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text}"
            if response.status_code >= 400:
                assert response.json()["error"]["message"]
            seen[response.status_code] = seen.get(response.status_code, 0) + 1

        check()
    # Valid bodies are served (some still exceed the configured limits); broken ones are refused.
    assert 200 in seen if mode == "positive" else 400 in seen
