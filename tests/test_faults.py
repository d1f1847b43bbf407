"""Faults, hostile servers and load: aiodicomweb keeps working and loses nothing.

Real Orthanc wherever Orthanc can show the behaviour (killed mid-download,
load); a scripted loopback socket for stalls and resets; scripted handlers for
hostile bodies, served over real sockets on each production path by the `wire`
fixture (tests/support/matrix.py). docs/faults.md lists every case with the test
that proves it.
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import shutil
import socket
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import anyio
import httpx
import psutil
import pytest

from aiodicomweb import (
    AsyncDicomWebClient,
    BearerTokenAuth,
    DicomWebError,
    DicomWebTimeoutError,
    MultipartError,
    RetryPolicy,
    UnexpectedResponseError,
)
from tests.support.corpus import Corpus, upload_instances
from tests.support.dicomgen import TEST_CORPUS, SeriesSpec, generate_series
from tests.support.matrix import Wire
from tests.support.orthanc import OrthancServer
from tests.support.rawserver import raw_server, reset

pytestmark = pytest.mark.anyio

ALPHA, ALPHA_MR, *_ = TEST_CORPUS
BOUNDARY = "fault-boundary-0123456789"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
SPEC = SeriesSpec(study=950, series=1, instances=5, rows=64, columns=64)
INSTANCES = list(generate_series(SPEC))
BODIES = [i.data for i in INSTANCES]
UIDS = [i.sop_instance_uid for i in INSTANCES]
SERIES_PATH = f"/dicom-web/studies/{SPEC.study_uid}/series/{SPEC.series_uid}"


@pytest.fixture
def anyio_backend() -> str:
    """Slow Orthanc and socket faults: asyncio only, not conftest's asyncio and trio."""
    return "asyncio"


async def no_sleep(seconds: float) -> None:
    pass


FAST_RETRY = RetryPolicy(max_attempts=3, sleep=no_sleep)


def part(body: bytes) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body + b"\r\n"


def multipart(bodies: list[bytes], *, cut_into_next: bool = False) -> bytes:
    """A series body; with `cut_into_next` it stops halfway through one more part."""
    body = b"".join(part(b) for b in bodies)
    if cut_into_next:
        return body + part(BODIES[len(bodies)])[: len(BODIES[len(bodies)]) // 2]
    return body + f"--{BOUNDARY}--\r\n".encode()


def qido_listing() -> bytes:
    return json.dumps([{"00080018": {"vr": "UI", "Value": [uid]}} for uid in UIDS]).encode()


class FakeWado:
    """A WADO/QIDO server (a MockTransport handler) whose series stream is scripted."""

    def __init__(self, series_answers: list[bytes]) -> None:
        self.series_answers = series_answers
        self.requests: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append(path)
        if path == SERIES_PATH:
            return httpx.Response(200, headers={"Content-Type": MULTIPART},
                                  content=self.series_answers.pop(0))  # fmt: skip
        if path == SERIES_PATH + "/instances":
            json_type = {"Content-Type": "application/dicom+json"}
            return httpx.Response(200, headers=json_type, content=qido_listing())
        uid = path.rsplit("/", 1)[1]
        body = BODIES[UIDS.index(uid)]
        return httpx.Response(200, headers={"Content-Type": "application/dicom"}, content=body)

    def instance_requests(self) -> list[str]:
        return [p.rsplit("/", 1)[1] for p in self.requests if "/instances/" in p]


def folder_bytes(folder: Path) -> list[bytes]:
    return [(folder / name).read_bytes() for name in sorted(os.listdir(folder))]


# -- resume instead of restart ---------------------------------------------------------


async def test_broken_stream_resumes_with_only_the_missing_instances(tmp_path, caplog, wire: Wire):
    server = FakeWado([multipart(BODIES[:2], cut_into_next=True)])
    async with wire.client(server, FAST_RETRY) as client:
        result = await client.download_series(SPEC.study_uid, SPEC.series_uid, tmp_path / "s")
    assert folder_bytes(tmp_path / "s") == BODIES
    # Each missing instance once, none of the kept ones; fetched concurrently, so they
    # reach a real server in any order.
    assert sorted(server.instance_requests()) == sorted(UIDS[2:])
    assert server.requests.count(SERIES_PATH) == 1
    assert result.instances == len(BODIES)
    saved = sum(map(len, BODIES[:2]))
    assert f"kept {saved} bytes" in caplog.text


async def test_broken_stream_without_retries_fails_and_leaves_nothing(tmp_path, wire: Wire):
    server = FakeWado([multipart(BODIES[:2], cut_into_next=True)])
    async with wire.client(server, None) as client:
        with pytest.raises(MultipartError):
            await client.download_series(SPEC.study_uid, SPEC.series_uid, tmp_path / "s")
    assert os.listdir(tmp_path) == []


async def test_stream_cut_inside_the_first_part_is_retried_whole(tmp_path, wire: Wire):
    server = FakeWado([multipart([], cut_into_next=True), multipart(BODIES)])
    async with wire.client(server, FAST_RETRY) as client:
        await client.download_series(SPEC.study_uid, SPEC.series_uid, tmp_path / "s")
    assert folder_bytes(tmp_path / "s") == BODIES
    assert server.requests == [SERIES_PATH, SERIES_PATH]


# -- real sockets: resets and stalls --------------------------------------------------------


def http_head(content_type: str, length: int | None = None) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n"
    head += f"Content-Length: {length}\r\n" if length is not None else "Connection: close\r\n"
    return (head + "\r\n").encode()


def scripted(series_script: Callable[[socket.socket], None]) -> Callable[[str], Callable]:
    def route(path: str) -> Callable[[socket.socket], None]:
        if path == SERIES_PATH:
            return series_script
        if path.startswith(SERIES_PATH + "/instances?") or path == SERIES_PATH + "/instances":
            body = qido_listing()
            return lambda s: s.sendall(http_head("application/dicom+json", len(body)) + body)
        body = BODIES[UIDS.index(path.rsplit("/", 1)[1])]
        return lambda s: s.sendall(http_head("application/dicom", len(body)) + body)

    return route


async def test_connection_reset_mid_stream_is_resumed_over_real_sockets(tmp_path):
    def series(sock: socket.socket) -> None:
        sock.sendall(http_head(MULTIPART) + multipart(BODIES[:3], cut_into_next=True))
        time.sleep(0.2)
        reset(sock)

    with raw_server(scripted(series)) as url:
        async with AsyncDicomWebClient(url, retry=FAST_RETRY) as client:
            await client.download_series(SPEC.study_uid, SPEC.series_uid, tmp_path / "s")
    assert folder_bytes(tmp_path / "s") == BODIES


def stall_until_client_leaves(sock: socket.socket, limit: float) -> None:
    sock.setblocking(False)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if sock.recv(1, socket.MSG_PEEK) == b"":
                return
        except BlockingIOError:
            pass
        time.sleep(0.05)


async def test_stalled_server_times_out_and_leaves_nothing(tmp_path):
    def series(sock: socket.socket) -> None:
        sock.sendall(http_head(MULTIPART) + multipart(BODIES[:1], cut_into_next=True))
        stall_until_client_leaves(sock, 10)

    with raw_server(scripted(series)) as url:
        async with AsyncDicomWebClient(url, retry=None, timeout=httpx.Timeout(0.5)) as client:
            # The server holds the connection open for 10 s: a timeout error (not an
            # end of stream) proves the 0.5 s read timeout fired first.
            with pytest.raises(DicomWebTimeoutError) as caught:
                await client.download_series(SPEC.study_uid, SPEC.series_uid, tmp_path / "s")
    assert isinstance(caught.value, TimeoutError) and isinstance(caught.value, ConnectionError)
    assert os.listdir(tmp_path) == []


# -- the real Orthanc, killed mid-download ---------------------------------------------------


@pytest.fixture
def doomed_orthanc() -> Iterator[tuple[OrthancServer, list[SeriesSpec], dict[str, list]]]:
    specs = [
        SeriesSpec(study=960, series=n, instances=60, rows=512, columns=512) for n in (1, 2, 3)
    ]
    generated = {spec.series_uid: [i.data for i in generate_series(spec)] for spec in specs}
    server = OrthancServer().start()
    try:
        for spec in specs:
            upload_instances(server, generate_series(spec))
        yield server, specs, generated
    finally:
        server.stop()


@pytest.mark.orthanc  # `doomed_orthanc` starts its own Orthanc
async def test_orthanc_killed_mid_study_then_restarted(doomed_orthanc, tmp_path):
    server, specs, generated = doomed_orthanc
    dest = tmp_path / "study"

    def kill_on_first_instance(progress) -> None:
        if server.process is not None:
            server.kill()

    async with AsyncDicomWebClient(server.dicomweb_url, retry=FAST_RETRY) as client:
        with pytest.raises(ConnectionError):
            await client.download_study(specs[0].study_uid, dest, progress=kill_on_first_instance)
    assert os.listdir(tmp_path) == []
    server.restart()
    async with AsyncDicomWebClient(server.dicomweb_url, retry=FAST_RETRY) as client:
        result = await client.download_study(specs[0].study_uid, dest)
    assert result.instances == sum(spec.instances for spec in specs)
    # Orthanc holds exactly the uploaded bytes (test_infrastructure proves it).
    for series_uid, bodies in generated.items():
        assert sorted(folder_bytes(dest / series_uid)) == sorted(bodies)


# -- local disk errors ----------------------------------------------------------------------


async def test_disk_error_while_writing_is_an_os_error_leaving_nothing(orthanc, corpus, tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    async with AsyncDicomWebClient(orthanc.dicomweb_url) as client:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))  # writes fail with EFBIG
        try:
            with pytest.raises(OSError) as caught:
                await client.download_series(ALPHA.study_uid, ALPHA.series_uid, tmp_path / "s")
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert not isinstance(caught.value, DicomWebError)
    assert os.listdir(tmp_path) == []


async def test_destination_removed_during_download_is_an_os_error(orthanc, corpus, tmp_path):
    def sabotage(progress) -> None:
        for staging in tmp_path.glob(".*.partial"):
            shutil.rmtree(staging)

    async with AsyncDicomWebClient(orthanc.dicomweb_url) as client:
        with pytest.raises(OSError):
            await client.download_series(ALPHA.study_uid, ALPHA.series_uid, tmp_path / "s",
                                         progress=sabotage)  # fmt: skip
    assert os.listdir(tmp_path) == []


# -- hostile bodies: bounded memory, clear errors -----------------------------------------------


def streamed(chunks: Iterator[bytes]) -> httpx.AsyncByteStream:
    """A response body produced lazily, chunk by chunk, like a network stream."""

    class Stream(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

    return Stream()


def endless(prefix: bytes, filler: bytes, total: int) -> Iterator[bytes]:
    yield prefix
    for _ in range(total // len(filler)):
        yield filler


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        pytest.param(lambda: endless(f"--{BOUNDARY}\r\nX-Junk: ".encode(), b"a" * 65536, 32 << 20),
                     {}, "header", id="endless-part-headers"),
        pytest.param(lambda: endless(b"", b"x" * 65536, 32 << 20), {}, "boundary delimiter",
                     id="endless-preamble"),
        pytest.param(lambda: iter([f"--{BOUNDARY}\r\nContent-Length: 1000000000000000\r\n\r\n"
                                   .encode(), b"tiny"]), {}, "ended", id="huge-content-length"),
    ],
)  # fmt: skip
async def test_hostile_bodies_fail_clearly_in_bounded_memory(body, headers, message, wire: Wire):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": MULTIPART, **headers},
                              stream=streamed(body()))  # fmt: skip

    tracemalloc.start()
    try:
        async with wire.client(handler, None) as client:
            with pytest.raises(MultipartError, match=message):
                await client.retrieve_series("1.2", "1.2.3")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_compressed_single_part_cut_short_is_an_error_not_a_short_file(
    encoding, wire: Wire
):
    data = b"DICM" + bytes(range(256)) * 400
    packed = gzip.compress(data) if encoding == "gzip" else zlib.compress(data)

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Type": "application/dicom", "Content-Encoding": encoding}
        return httpx.Response(200, headers=headers, stream=streamed(iter([packed[:-20]])))

    async with wire.client(handler, None) as client:
        with pytest.raises(UnexpectedResponseError, match="cut short"):
            await client.retrieve_instance("1.2", "1.2.3", "1.2.3.4")


async def test_gzip_bomb_on_a_multipart_body_is_inflated_in_bounded_pieces(wire: Wire):
    zeros = 256 << 20
    bomb_part = (f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                 + b"\0" * zeros + f"\r\n--{BOUNDARY}--\r\n".encode())  # fmt: skip
    compressed = gzip.compress(bomb_part, compresslevel=9)
    del bomb_part

    def handler(request: httpx.Request) -> httpx.Response:
        chunks = (compressed[i : i + 65536] for i in range(0, len(compressed), 65536))
        return httpx.Response(200, headers={"Content-Type": MULTIPART, "Content-Encoding": "gzip"},
                              stream=streamed(chunks))  # fmt: skip

    tracemalloc.start()
    try:
        async with wire.client(handler, RetryPolicy()) as client:
            async with client.stream_series("1.2", "1.2.3") as parts:
                sizes = [sum([len(v) async for v in p.aiter_views()]) async for p in parts]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sizes == [zeros]
    assert len(compressed) < 1 << 20 and peak < 16 << 20


@pytest.mark.parametrize(
    "auth",
    [
        pytest.param(("user", "s3cret"), id="basic"),
        pytest.param(BearerTokenAuth("tok"), id="bearer"),
    ],
)
async def test_redirect_to_another_host_does_not_carry_credentials(auth, wire: Wire):
    # The wire server answers under both of its names: 127.0.0.1 is the PACS, and
    # localhost (another host, same port) stands for the stranger.
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.url.host] = request.headers.get("Authorization")
        if request.url.host == "127.0.0.1":
            elsewhere = request.url.copy_with(host="localhost")
            return httpx.Response(302, headers={"Location": str(elsewhere)})
        return httpx.Response(200, json=[])

    async with wire.client(handler, RetryPolicy(), auth=auth) as client:
        assert await client.search_studies() == []
    assert seen["127.0.0.1"] is not None
    assert seen["localhost"] is None


async def test_hostile_instance_uid_in_qido_writes_nothing(tmp_path, wire: Wire):
    def handler(request: httpx.Request) -> httpx.Response:
        listing = [{"00080018": {"vr": "UI", "Value": ["../../../../tmp/owned"]}}]
        return httpx.Response(200, headers={"Content-Type": "application/dicom+json"},
                              content=json.dumps(listing))  # fmt: skip

    async with wire.client(handler, RetryPolicy()) as client:
        with pytest.raises(UnexpectedResponseError, match="SOPInstanceUID"):
            await client.download_series("1.2", "1.2.3", tmp_path / "s", strategy="per_instance")
    assert os.listdir(tmp_path) == []
    assert not os.path.exists("/tmp/owned")


# -- load against the real Orthanc ------------------------------------------------------------


def open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except FileNotFoundError:
            pass  # the descriptor listdir itself used
    return count


async def test_load_1000_searches_and_20_concurrent_downloads(orthanc, corpus: Corpus, tmp_path):
    process = psutil.Process()
    fds_before, sockets_before = process.num_fds(), open_sockets()
    async with AsyncDicomWebClient(orthanc.dicomweb_url, max_connections=16) as client:
        await client.search_studies()  # warm up the pool and imports before measuring memory
        rss_before = process.memory_info().rss
        limiter = anyio.CapacityLimiter(16)
        counts: list[int] = []

        async def search(n: int) -> None:
            async with limiter:
                counts.append(len(await client.search_series(ALPHA.study_uid)))

        started = time.perf_counter()
        async with anyio.create_task_group() as group:
            for n in range(1000):
                group.start_soon(search, n)
        qido_seconds = time.perf_counter() - started

        async def download(n: int) -> None:
            await client.download_series(ALPHA.study_uid, ALPHA_MR.series_uid, tmp_path / f"d{n}")

        started = time.perf_counter()
        async with anyio.create_task_group() as group:
            for n in range(20):
                group.start_soon(download, n)
        download_seconds = time.perf_counter() - started
        rss_growth = (process.memory_info().rss - rss_before) / 1e6
    assert counts == [2] * 1000
    expected = sorted(i.data for i in corpus.series(ALPHA_MR.series_uid))
    for n in range(20):
        assert sorted(folder_bytes(tmp_path / f"d{n}")) == expected
    # Nothing leaked (earlier tests' sockets may still be closing, so not "equal").
    assert process.num_fds() <= fds_before and open_sockets() <= sockets_before
    assert rss_growth < 30
    print(f"\nload: 1000 QIDO in {qido_seconds:.2f} s ({1000 / qido_seconds:.0f}/s); "
          f"20 concurrent series downloads in {download_seconds:.2f} s; "
          f"RSS growth {rss_growth:.1f} MB; fds {fds_before} -> {process.num_fds()}")  # fmt: skip
