"""A bounded pool of doc caches: the documents retrieved most recently, recomputed on a miss.

    pool = DocCachePool(capacity_bytes=2 * 1024**3)
    rag = RagPipeline(model, index, doc_cache_pool=pool)     # index needs no stored doc caches
    rag.ask(question, mode="doc_cache"); pool.stats()

Storing every document's keys/values is what made doc caching impractical at the paper's scale
(about 30 TB for 2.7M documents). Retrieval is skewed: a few documents answer most questions. So,
as RAGCache does, keep only the caches of recently retrieved documents, within a byte budget,
evicting the least recently used; a document not in the pool gets its cache from the index's
store when it has one, else from one embedding pass of the document, the pass that made it at
index time (same format, same max_length), so the answer is the same either way.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

from .kv import KVSegment


def segment_bytes(segment: KVSegment) -> int:
    return sum(t.numel() * t.element_size() for t in (segment.keys, segment.values))


class DocCachePool:
    """Least-recently-used doc caches within ``capacity_bytes`` (keys and values as held in memory)."""

    def __init__(self, capacity_bytes: int):
        if isinstance(capacity_bytes, bool) or not isinstance(capacity_bytes, int) or capacity_bytes < 1:
            raise ValueError(f"capacity_bytes must be a positive int, got {capacity_bytes!r}")
        self.capacity_bytes = capacity_bytes
        self._segments: OrderedDict[int, KVSegment] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0

    def __contains__(self, doc_id: int) -> bool:
        return doc_id in self._segments

    def __len__(self) -> int:
        return len(self._segments)

    def get(self, doc_id: int, compute: Callable[[], KVSegment]) -> KVSegment:
        """Document ``doc_id``'s cache: from the pool (now the most recent), or ``compute()``d and
        kept, evicting the least recently used until it fits. A cache larger than the whole
        budget is returned without being kept."""
        if doc_id in self._segments:
            self.hits += 1
            self._segments.move_to_end(doc_id)
            return self._segments[doc_id]
        self.misses += 1
        segment = compute()
        size = segment_bytes(segment)
        if size > self.capacity_bytes:
            return segment
        while self.bytes + size > self.capacity_bytes:
            _, evicted = self._segments.popitem(last=False)
            self.bytes -= segment_bytes(evicted)
            self.evictions += 1
        self._segments[doc_id] = segment
        self.bytes += size
        return segment

    def stats(self) -> dict:
        asked = self.hits + self.misses
        return {"documents": len(self), "bytes": self.bytes, "capacity_bytes": self.capacity_bytes,
                "hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                "hit_rate": self.hits / asked if asked else 0.0}
