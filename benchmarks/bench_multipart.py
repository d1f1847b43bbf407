"""Throughput and memory of the multipart parser, against a copy-only baseline.

Run: ``python benchmarks/bench_multipart.py [--quick] [--repeat N]``

Each case prebuilds one multipart/related body (random part bodies, so the
delimiter never occurs by chance and ``bytes.find`` gets no easy skips from
long runs of zeros) and cuts it into 64 KiB chunks: ``memoryview`` slices of the
body, made before timing. Then, best of N runs:

* parser: ``MultipartParser.feed(chunk)`` for every chunk, touching
  ``len(event.data)`` of every ``PartData`` (and checking the total), then
  ``close()``.
* baseline: the cheapest thing any client does with each chunk, copying it
  once: ``buf += chunk; n += len(buf); buf.clear()`` on one ``bytearray``
  (one allocation and one memcpy per chunk, no parsing at all).
* search floor (scanned rows only): ``bytes.find(delimiter)`` over each chunk,
  after ``chunk.tobytes()`` for memoryview chunks -- the work a parser that
  scans cannot avoid in CPython, so "of floor" shows the parser's own overhead.

MB/s are 10^6 bytes per second of body. "ratio" is parser / baseline from the
same run. "peak" is the highest memory traced by ``tracemalloc`` while a fresh
parser consumes the whole body (measured in a separate, untimed run; the
prebuilt body and its chunk views are allocated before tracing starts); it
should stay at a few KiB whatever the part size, because the parser hands out
views of the chunks it is fed instead of accumulating parts.

Rows marked "bytes chunks" feed ``bytes`` objects instead of memoryviews, as
``httpx`` delivers them; the scanning path can then search the chunk in place
instead of first copying it into a searchable ``bytes``.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiodicomweb._multipart import MultipartParser, PartData

CHUNK = 64 * 1024
KIB = 1024
MIB = 1024 * 1024
BOUNDARY = b"aiodicomweb-bench-5f2c7e0b9d1a4c3e"


@dataclass(frozen=True)
class Case:
    """One benchmark body: how many parts of which size, framed how."""

    name: str
    parts: int
    part_size: int
    content_length: bool
    bytes_chunks: bool = False


def build_body(case: Case, rng: random.Random) -> tuple[bytes, int]:
    """Return a multipart body (Orthanc-like framing) and its total payload size."""
    block = rng.randbytes(4 * MIB)
    pieces: list[bytes] = []
    for index in range(case.parts):
        start = (index * 7919) % MIB
        payload = (block * (case.part_size // len(block) + 2))[start : start + case.part_size]
        head = b"--" + BOUNDARY + b"\r\nContent-Type: application/dicom\r\n"
        if case.content_length:
            head += b"Content-Length: %d\r\n" % len(payload)
        pieces += [b"\r\n" if index else b"", head, b"\r\n", payload]
    pieces.append(b"\r\n--" + BOUNDARY + b"--\r\n")
    return b"".join(pieces), case.parts * case.part_size


def chunks_of(body: bytes, as_bytes: bool) -> list[bytes] | list[memoryview]:
    view = memoryview(body)
    if as_bytes:
        return [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]
    return [view[i : i + CHUNK] for i in range(0, len(body), CHUNK)]


def run_parser(chunks: Sequence[bytes | memoryview], payload: int) -> None:
    parser = MultipartParser(BOUNDARY)
    feed = parser.feed
    total = 0
    for chunk in chunks:
        for event in feed(chunk):
            if type(event) is PartData:
                total += len(event.data)
    parser.close()
    if total != payload:
        raise AssertionError(f"parsed {total} payload bytes, expected {payload}")


def run_baseline(chunks: Sequence[bytes | memoryview], payload: int) -> None:
    buf = bytearray()
    total = 0
    for chunk in chunks:
        buf += chunk
        total += len(buf)
        buf.clear()
    if total < payload:
        raise AssertionError("baseline lost bytes")


def run_search(chunks: Sequence[bytes | memoryview], payload: int) -> None:
    delimiter = b"\r\n--" + BOUNDARY
    found = 0
    for chunk in chunks:
        hay = chunk if isinstance(chunk, bytes) else chunk.tobytes()
        found += hay.find(delimiter) >= 0
    if found > payload:
        raise AssertionError("impossible")


def best_time(func: Callable[[], None], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def peak_memory(chunks: Sequence[bytes | memoryview], payload: int) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        run_parser(chunks, payload)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def measure(case: Case, repeat: int, rng: random.Random) -> str:
    body, payload = build_body(case, rng)
    chunks = chunks_of(body, case.bytes_chunks)
    parser = best_time(lambda: run_parser(chunks, payload), repeat)
    baseline = best_time(lambda: run_baseline(chunks, payload), repeat)
    peak = peak_memory(chunks, payload)
    size = len(body)
    floor = "-"
    if not case.content_length:
        search = best_time(lambda: run_search(chunks, payload), repeat)
        floor = f"{size / search / 1e6:,.0f} ({search / parser:.0%})"
    return (
        f"| {case.name} | {size / 1e6:.0f} | {size / parser / 1e6:,.0f} "
        f"| {size / baseline / 1e6:,.0f} | {baseline / parser:.2f} | {floor} "
        f"| {peak / KIB:.1f} KiB |"
    )


def cases(quick: bool) -> list[Case]:
    many, big = (20, 20 * MIB) if quick else (200, 200 * MIB)
    part = 512 * KIB
    return [
        Case(f"{many} x 512 KiB, Content-Length", many, part, True),
        Case(f"{many} x 512 KiB, scanned", many, part, False),
        Case(f"1 x {big // MIB} MiB, Content-Length", 1, big, True),
        Case(f"1 x {big // MIB} MiB, scanned", 1, big, False),
        Case(f"{many} x 512 KiB, scanned, bytes chunks", many, part, False, True),
        Case(f"1 x {big // MIB} MiB, scanned, bytes chunks", 1, big, False, True),
    ]


def main(argv: list[str]) -> int:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--quick", action="store_true", help="smaller bodies, fewer runs")
    options.add_argument("--repeat", type=int, help="runs per measurement (best is kept)")
    args, _ = options.parse_known_args(argv)  # `run_all` passes every benchmark's options
    repeat = args.repeat or (3 if args.quick else 7)
    rng = random.Random(2046)
    print(f"Python {sys.version.split()[0]}, 64 KiB chunks, best of {repeat}\n")
    print(
        "| case | body MB | parser MB/s | baseline MB/s | parser/baseline "
        "| search floor MB/s (parser of floor) | peak traced |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for case in cases(args.quick):
        print(measure(case, repeat, rng), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
