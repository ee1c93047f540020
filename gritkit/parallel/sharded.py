"""Embedding a corpus with several processes (torchrun), in pieces that outlive a crash.

``gritkit embed`` and ``gritkit rag index`` under ``torchrun --nproc_per_node N`` split the inputs
into N contiguous shards, one per process, each cut into chunks of ``CHUNK_DOCUMENTS``. A process
embeds its chunks one by one and writes each as a finished *piece* into a work directory beside
the output; rank 0 waits for all, merges the pieces into exactly the output one process writes,
and removes the directory. Why pieces on disk rather than gathering vectors in memory: a run that
dies (a killed job, a lost node) keeps every piece already written, so the same command run again
only embeds what is missing, with N processes or with one.

The work directory ``.<output name>.shards/`` holds

- ``manifest.json``: the number of inputs, sha256 of the inputs and of the model and settings
  (so that pieces of another corpus, model or setting are never merged: such a directory is
  started afresh), and the layout (shards, documents per chunk) that names the pieces;
- ``shard-<s>-of-<S>.chunk-<c>/``: one piece, ``embeddings.npy`` for its documents plus whatever
  the command stores beside it (``rag index --cache-docs``: its ``doc_cache/``). A piece is
  written into a temporary sibling and renamed into place, so a piece that exists is complete.

Everything that decides (planning, resuming, merging) takes rank and world explicitly, so it
runs and is tested in one process; only ``join_processes`` touches torch.distributed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .distributed import Processes

# Documents per piece: what a killed process loses at most, and how often the progress bar moves.
CHUNK_DOCUMENTS = 1000
MANIFEST = "manifest.json"
EMBEDDINGS = "embeddings.npy"
# A process that finished its shard waits at a barrier for the slowest one, which on a big corpus
# can take hours; NCCL's default timeout (10 min) would abort the job after all the work was done.
WAIT_TIMEOUT = timedelta(days=1)


def under_torchrun() -> bool:
    """Whether this process is one of several started by torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass(frozen=True)
class Team:
    """This command's processes: ``wait`` returns once every one of them has called it."""

    processes: Processes
    wait: Callable[[], None]

    def device(self, requested: str | None) -> str | None:
        """The device to load the model on: under torchrun each process takes its own GPU
        (cuda:LOCAL_RANK) for None or plain "cuda"; any other request (e.g. "cpu") is kept."""
        if not self.processes.distributed or requested not in (None, "cuda"):
            return requested
        return str(self.processes.device)

    def rank_zero_first(self, make: Callable[[], object]):
        """``make()`` on rank 0, then on the others: a shipped model that is built into the cache
        on first use is then built once, not by every process at the same time."""
        result = make() if self.processes.is_main else None
        self.wait()
        return result if self.processes.is_main else make()


@contextmanager
def join_processes():
    """The Team of this command: the torchrun process group when there is one, else just this process.

    Barriers go through a gloo group of their own with a long timeout (see ``WAIT_TIMEOUT``). The
    group is torn down only after success: after an error the other processes may be waiting in a
    barrier this one will never reach, so it exits at once and torchrun stops the others.
    """
    if not under_torchrun():
        yield Team(Processes(), lambda: None)
        return
    import torch.distributed as dist

    from .distributed import setup_processes, teardown_processes

    processes = setup_processes()
    group = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
    yield Team(processes, lambda: dist.barrier(group=group))
    dist.barrier(group=group)  # rank 0 may still be merging: wait here, not in NCCL's shorter barrier
    teardown_processes(processes)


@dataclass(frozen=True)
class Piece:
    """Documents ``start:end`` of the inputs, chunk ``chunk`` of shard ``shard`` of ``shards``."""

    shard: int
    shards: int
    chunk: int
    start: int
    end: int

    @property
    def name(self) -> str:
        return f"shard-{self.shard}-of-{self.shards}.chunk-{self.chunk}"

    def __len__(self) -> int:
        return self.end - self.start


def plan(documents: int, shards: int, chunk_documents: int) -> list[Piece]:
    """The pieces of ``documents`` inputs, in input order.

    Shard s is documents [documents*s//shards, documents*(s+1)//shards): contiguous, sizes
    differing by at most one (a shard may be empty when there are fewer documents than shards).
    Each shard is cut into chunks of ``chunk_documents`` (the last one shorter).
    """
    pieces = []
    for shard in range(shards):
        start, end = documents * shard // shards, documents * (shard + 1) // shards
        for chunk, first in enumerate(range(start, end, chunk_documents)):
            pieces.append(Piece(shard, shards, chunk, first, min(first + chunk_documents, end)))
    return pieces


def digest_texts(texts: Sequence[str]) -> str:
    """sha256 of a list of texts (each length-prefixed, so ["ab", "c"] and ["a", "bc"] differ)."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def model_settings(grit, model_dir: str | os.PathLike) -> dict:
    """What of a loaded model decides its vectors: its directory's files, weight dtype and GritConfig.

    The files are named with size and modification time, not hashed: a model saved again in the
    same place (retrained) is another model, found without reading gigabytes of weights.
    """
    root = Path(model_dir).resolve()
    files = sorted([str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns]
                   for p in root.rglob("*") if p.is_file())
    return {"model_dir": str(root), "model_files": files, "dtype": str(grit.model.dtype),
            "grit_config": grit.config.to_dict()}


class ShardWork:
    """The work directory of one output (see the module docstring): plan, resume and merge.

    ``settings`` is everything besides the inputs that changes the vectors (model, dtype,
    instruction, lengths...): pieces made with other settings are not reused.
    """

    def __init__(self, output: str | os.PathLike, texts: Sequence[str], settings: dict,
                 chunk_documents: int | None = None):
        output = Path(output)
        self.directory = output.parent / f".{output.name}.shards"
        self.output = output
        self.texts = list(texts)
        self.chunk_documents = chunk_documents or CHUNK_DOCUMENTS
        self.identity = {"documents": len(self.texts), "inputs_sha256": digest_texts(self.texts),
                         "settings_sha256": hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()}

    def _manifest(self) -> dict | None:
        """The directory's manifest when it describes these inputs and settings, else None."""
        try:
            manifest = json.loads((self.directory / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        return manifest if all(manifest.get(k) == v for k, v in self.identity.items()) else None

    def resumable(self) -> bool:
        """Whether the directory holds pieces of these very inputs and settings."""
        return self._manifest() is not None

    def prepare(self, shards: int) -> None:
        """On rank 0 alone, before any process writes: keep a matching directory, else start one.

        A matching directory keeps its finished pieces and its layout (so a rerun with another
        number of processes fills the same pieces); the temporaries of a killed process are
        removed. Any other directory (another corpus, model or setting, or no manifest) is
        removed whole and a new one made for ``shards`` shards.
        """
        if self.resumable():
            for leftover in self.directory.glob(".tmp-*"):
                shutil.rmtree(leftover, ignore_errors=True)
            return
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        manifest = {**self.identity, "shards": shards, "chunk_documents": self.chunk_documents}
        tmp = self.directory / f".tmp-{MANIFEST}"
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp, self.directory / MANIFEST)

    def pieces(self) -> list[Piece]:
        """All pieces, in input order, in the layout the manifest records."""
        manifest = self._manifest()
        if manifest is None:
            raise FileNotFoundError(f"{self.directory}: no manifest of these inputs (prepare it on rank 0 first)")
        return plan(len(self.texts), manifest["shards"], manifest["chunk_documents"])

    def missing(self) -> list[Piece]:
        return [piece for piece in self.pieces() if not (self.directory / piece.name).is_dir()]

    def assigned(self, missing: Sequence[Piece], rank: int, world: int) -> list[Piece]:
        """The missing pieces process ``rank`` of ``world`` embeds.

        With as many processes as shards each takes its own shard (a rerun of the same command
        redoes only what each process lost); with another number (one process finishing a run
        of several, say) the missing pieces are dealt out in turn.
        """
        if missing and world == missing[0].shards:
            return [piece for piece in missing if piece.shard == rank]
        return list(missing[rank::world])

    def compute(self, piece: Piece, embed: Callable[[list[str], Path], np.ndarray]) -> None:
        """Write one piece: ``embed(texts, directory)`` returns the vectors and may write more files
        into ``directory``; the piece appears under its name only once all of it is written."""
        tmp = self.directory / f".tmp-{piece.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            vectors = embed(self.texts[piece.start: piece.end], tmp)
            np.save(tmp / EMBEDDINGS, vectors)
            os.replace(tmp, self.directory / piece.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def merge(self, combine: Callable[[np.ndarray, list[Path]], object]):
        """On rank 0 once all pieces are written: ``combine(vectors of all inputs in order, piece
        directories in order)`` writes the output; then the work directory is removed and what
        ``combine`` returned is returned."""
        pieces = self.pieces()
        absent = [piece.name for piece in pieces if not (self.directory / piece.name).is_dir()]
        if absent:
            raise FileNotFoundError(f"{self.directory}: pieces {', '.join(absent)} are missing; "
                                    "run the same command again to embed them")
        parts = []
        for piece in pieces:
            vectors = np.load(self.directory / piece.name / EMBEDDINGS)
            if len(vectors) != len(piece):
                raise ValueError(f"{self.directory / piece.name / EMBEDDINGS}: {len(vectors)} vectors for "
                                 f"{len(piece)} documents; remove {self.directory} and run again")
            parts.append(vectors)
        result = combine(np.concatenate(parts), [self.directory / piece.name for piece in pieces])
        shutil.rmtree(self.directory)
        return result


def use_shards(work: ShardWork, team: Team) -> bool:
    """Whether to embed in pieces: under torchrun, or alone to finish an interrupted run of the
    same inputs and settings. A work directory of other inputs or settings is left alone by a
    single process (it writes the output in one go, as always), with a note saying so."""
    if team.processes.distributed or work.resumable():
        return True
    if work.directory.exists():
        print(f"gritkit: ignoring {work.directory}: its pieces are of other inputs, model or settings",
              file=sys.stderr)
    return False


def run_sharded(work: ShardWork, team: Team, embed: Callable[[list[str], Path], np.ndarray],
                combine: Callable[[np.ndarray, list[Path]], object]):
    """Embed ``work``'s missing pieces with ``team`` and merge them on rank 0 (see ShardWork);
    returns what ``combine`` returned on rank 0, None on the others.

    Rank 0 shows a progress bar of its own documents (every shard is about as long) and prints
    the throughput of all processes together once every piece is written.
    """
    from tqdm.auto import tqdm

    if not work.texts:
        raise ValueError(f"nothing to embed for {work.output}: no inputs")
    rank, world = team.processes.rank, team.processes.world_size
    if team.processes.is_main:
        work.prepare(world)
    team.wait()
    missing = work.missing()
    team.wait()  # every process has listed the missing pieces before any piece is written
    total = sum(len(piece) for piece in missing)
    if team.processes.is_main and len(missing) < len(work.pieces()):
        print(f"gritkit: resuming from {work.directory}: {len(work.texts) - total} of {len(work.texts)} "
              "documents already embedded", file=sys.stderr)
    mine = work.assigned(missing, rank, world)
    start = time.perf_counter()
    with tqdm(total=sum(len(piece) for piece in mine), unit="doc", desc=f"embed (rank {rank} of {world})",
              disable=not team.processes.is_main) as bar:
        for piece in mine:
            work.compute(piece, embed)
            bar.update(len(piece))
    team.wait()
    seconds = time.perf_counter() - start
    if team.processes.is_main:
        print(f"embedded {total} documents in {seconds:.1f} s ({total / max(seconds, 1e-9):.1f} documents/s)",
              file=sys.stderr)
        return work.merge(combine)
    return None
