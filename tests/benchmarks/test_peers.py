"""benchmarks/peers.py: its smoke run (gritkit alone, on gritkit-tiny, at tiny sizes: the figures mean
nothing) prints the JSON line of a real run, with the peers listed as skipped; a peer that is not
installed is skipped with a note, not an error."""

from __future__ import annotations

import argparse
import json
import math
import runpy
from pathlib import Path

import pytest

PEERS = Path(__file__).resolve().parents[2] / "benchmarks" / "peers.py"
PEER_NAMES = {"vllm-fp32", "llama.cpp-F32", "llama.cpp-F16", "llama.cpp-Q8_0"}


@pytest.fixture(scope="module")
def peers():
    return runpy.run_path(str(PEERS), run_name="benchmark_peers")


@pytest.mark.slow  # starts a worker process and a `gritkit serve`
def test_smoke_run_prints_the_json_of_a_real_run(peers, capsys):
    peers["main"](["--smoke", "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    assert set(result) == {"ratios", "engines", "machine", "quiet"}
    assert result["ratios"] == {}  # no peer measured
    modes = {f"gritkit-{mode}" for mode in peers["GRITKIT_MODES"]}
    assert set(result["engines"]) == modes | PEER_NAMES
    assert all(set(result["engines"][name]) == {"skipped"} for name in PEER_NAMES)
    served = {"gritkit-fp32", "gritkit-int8-compiled", "gritkit-bf16-compiled"}  # the first mode of each weights
    for name in modes:
        gritkit = result["engines"][name]
        for metric in peers["METRICS"] if name in served else ("decode_tok_s", "prefill_tok_s", "embed_tok_s"):
            value = gritkit[metric]
            assert isinstance(value, (int, float)) and not isinstance(value, bool), (name, metric, value)
            if metric == "served_embed_p95_s" and gritkit["served_embed_requests"] == 0:
                continue  # smoke chats can end before any embedding reply comes back: no latency under load
            assert math.isfinite(value) and value > 0, (name, metric, value)
        assert ("served_chat_tok_s" in gritkit) == (name in served)
        assert (gritkit["compile_s"] > 0) == name.endswith("-compiled")
    assert {"cpu", "avx512_bf16", "amx", "vnni"} <= set(result["machine"])
    assert len(result["quiet"]["load_average_1_5_15_min"]) == 3


def test_missing_peers_are_skipped_with_the_reason(peers):
    args = argparse.Namespace(smoke=False, vllm_python="/nonexistent/bin/python", llama_cpp_bin="/nonexistent",
                              llama_types="F32,Q8_0")
    found = peers["peers"](args)
    assert set(found) == {"vllm-fp32", "llama.cpp-F32", "llama.cpp-Q8_0"}
    assert all(isinstance(reason, str) and "not found" in reason and "setup_peers.sh" in reason
               for reason in found.values())
