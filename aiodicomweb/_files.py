"""Writing received parts to files without stalling the event loop.

Measured on the project's VM (ext4 on virtio): writing a 525 KB instance into
the page cache costs about 1 ms, as long as receiving and parsing it. Done
inline, the two add up; done in a worker thread while the event loop keeps
receiving, they overlap. So a `FileLane` hands whole batches (one instance, or
`FLUSH_BYTES` of a large one) to one worker thread at a time, in order, with a
bounded queue for backpressure. Chunks are memoryviews of the immutable `bytes`
httpx hands out, so queueing them copies nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aiodicomweb._parts import Part

__all__ = ["FLUSH_BYTES", "FileLane", "write_part"]

FLUSH_BYTES = 4 << 20
QUEUE_DEPTH = 8


@dataclass
class _OpenFile:
    path: Path
    handle: BinaryIO | None = None
    size: int = 0


@dataclass
class _Job:
    target: _OpenFile
    chunks: list[memoryview]
    last: bool
    on_done: Callable[[_OpenFile], None] | None = None

    def run(self) -> None:
        """Runs in a worker thread."""
        target = self.target
        if target.handle is None:
            target.handle = open(target.path, "wb")
        target.handle.writelines(self.chunks)
        if self.last:
            target.handle.close()


@dataclass
class FileLane:
    """One writer thread at a time, fed in order through a bounded queue.

    Use inside a task group: start `run`, `write` parts, then `finish`.
    """

    depth: int = QUEUE_DEPTH
    _open: set[int] = field(default_factory=set)
    _files: dict[int, _OpenFile] = field(default_factory=dict)

    def __post_init__(self) -> None:
        streams = anyio.create_memory_object_stream[_Job](self.depth)
        self._send: MemoryObjectSendStream[_Job] = streams[0]
        self._receive: MemoryObjectReceiveStream[_Job] = streams[1]

    async def run(self) -> None:
        """Execute queued jobs until `finish`; close every file on the way out."""
        try:
            async with self._receive:
                async for job in self._receive:
                    self._files[id(job.target)] = job.target
                    await anyio.to_thread.run_sync(job.run)
                    if job.last:
                        self._files.pop(id(job.target), None)
                        if job.on_done is not None:
                            job.on_done(job.target)
        finally:
            for target in self._files.values():
                if target.handle is not None:
                    target.handle.close()
            self._files.clear()

    async def write(
        self, part: Part, path: Path, on_done: Callable[[_OpenFile], None] | None = None
    ) -> int:
        """Queue the part's bytes for `path` as they arrive; returns the part's size."""
        target = _OpenFile(path)
        batch: list[memoryview] = []
        batched = 0
        async for view in part.aiter_views():
            batch.append(view)
            batched += len(view)
            target.size += len(view)
            if batched >= FLUSH_BYTES:
                await self._send.send(_Job(target, batch, last=False))
                batch, batched = [], 0
        await self._send.send(_Job(target, batch, last=True, on_done=on_done))
        return target.size

    async def finish(self) -> None:
        """No more jobs: `run` returns once the queue is drained."""
        await self._send.aclose()


async def write_part(part: Part, path: Path) -> int:
    """Write one part to `path`, batching writes through worker threads; returns its size.

    For per-instance fetches: the file is closed before returning, whatever
    happens, so a retry can reopen it cleanly.
    """
    handle = await anyio.to_thread.run_sync(lambda: open(path, "wb"))
    size = 0
    try:
        batch: list[memoryview] = []
        batched = 0
        async for view in part.aiter_views():
            batch.append(view)
            batched += len(view)
            if batched >= FLUSH_BYTES:
                await anyio.to_thread.run_sync(handle.writelines, batch)
                size += batched
                batch, batched = [], 0
        await anyio.to_thread.run_sync(handle.writelines, batch)
        size += batched
    finally:
        handle.close()
    return size
