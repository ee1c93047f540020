"""The trainer's thread count: requested, pinned by OMP_NUM_THREADS, or the free cores."""

from __future__ import annotations

import subprocess
import sys

from gritkit.parallel.threads import busy_cores, choose_threads, usable_cores


def test_an_explicit_request_or_omp_num_threads_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads(5, busy=0.0) == 5
    assert choose_threads(0, busy=0.0) == 3


def test_free_cores_are_shared_by_the_processes_of_the_machine(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = usable_cores()
    assert choose_threads(busy=0.0) == cores
    assert choose_threads(busy=cores - 1.2) == 1  # rounds the busy share: 0.8 of a core free counts as one
    assert choose_threads(busy=float(cores + 3)) == 1  # never fewer than one
    assert choose_threads(processes_per_machine=cores, busy=0.0) == 1


def test_a_busy_loop_in_another_process_is_counted():
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy_cores(0.2)  # let it start
        assert busy_cores(0.5) > 0.5
    finally:
        competitor.kill()
        competitor.wait()


def test_a_server_leaves_one_core_to_its_http_thread_unless_told(monkeypatch):
    import gritkit.parallel.threads as threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    assert threads.serving_threads() == 1
    assert threads.serving_threads(2) == 2  # an explicit --threads wins
    monkeypatch.setattr(threads, "usable_cores", lambda: 1)
    assert threads.serving_threads() == 1  # never fewer than one
    monkeypatch.setattr(threads, "usable_cores", lambda: 16)
    assert threads.serving_threads() == 15
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert threads.serving_threads() == 4
    assert threads.serving_threads(3) == 3


def test_serve_refuses_a_negative_thread_count(capsys):
    from gritkit.cli import main

    assert main(["serve", "--model", "gritkit-tiny", "--threads", "-1"]) == 2
    assert "--threads must be 0 (choose) or positive, got -1" in capsys.readouterr().err
