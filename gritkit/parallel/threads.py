"""How many CPU threads a process should compute with, given what else the machine is running.

PyTorch's CPU kernels run on an OpenMP team of ``torch.get_num_threads()`` threads that meet at
a barrier after every parallel operator. When another process holds one of the cores, one
thread of the team is off the CPU for a scheduler time slice (milliseconds) while the others
wait for it at the barrier, and a small model's training step has thousands of such operators:
that is how one competing process made a quickstart step ~10x slower instead of ~2x
(``benchmarks/threads_under_load.py`` measures it). A team no larger than the free cores never
waits for a descheduled member.
"""

from __future__ import annotations

import os
import time


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def busy_cores(interval: float = 0.5) -> float:
    """Cores kept busy by other processes, from /proc/stat over ``interval`` seconds.

    The caller sleeps meanwhile, so what is counted is everyone else. Falls back to the
    one-minute load average where /proc/stat does not exist.
    """
    def snapshot() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as handle:
                fields = [int(v) for v in handle.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    first = snapshot()
    if first is None:
        return min(os.getloadavg()[0], float(usable_cores())) if hasattr(os, "getloadavg") else 0.0
    time.sleep(interval)
    second = snapshot()
    total, idle = second[0] - first[0], second[1] - first[1]
    if total <= 0:
        return 0.0
    return (os.cpu_count() or 1) * (total - idle) / total


def choose_threads(requested: int = 0, processes_per_machine: int = 1, busy: float | None = None) -> int:
    """Threads per process: ``requested`` when > 0, else the free cores shared by this machine's processes.

    ``OMP_NUM_THREADS`` set in the environment counts as a request (it is how torchrun and users
    pin threads). Never fewer than one.
    """
    pinned = _pinned_threads(requested)
    if pinned:
        return pinned
    busy = busy_cores() if busy is None else busy
    free = usable_cores() - round(busy)
    return max(1, free // max(1, processes_per_machine))


def serving_threads(requested: int = 0) -> int:
    """Threads for a server's model: ``requested`` when > 0, else one core fewer than usable.

    The model's OpenMP team shares the cores with the server's HTTP thread, which parses requests
    and sends every generated token. A team as large as the machine loses a member to that thread
    at each of its barriers, as it does to another process (module docstring); leaving it a core
    made gritkit-tiny's batched decoding faster and embeddings under load steadier on 2 cores
    (benchmarks/serve.py --threads). ``OMP_NUM_THREADS`` set in the environment counts as a request.
    """
    return _pinned_threads(requested) or max(1, usable_cores() - 1)


def _pinned_threads(requested: int) -> int:
    """``requested`` when > 0, else ``OMP_NUM_THREADS`` when set to a positive number, else 0 (choose)."""
    if requested > 0:
        return requested
    from_env = os.environ.get("OMP_NUM_THREADS", "")
    return int(from_env) if from_env.isdigit() and int(from_env) > 0 else 0
