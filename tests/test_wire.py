"""The fast path's framing as a hostile server meets it, closed clients, and missing extras.

Real sockets (the scripted loopback server): each malformed answer is refused as
h11 refuses it, with a `ConnectionError` subclass and without hanging; the
answers h11 accepts are read.
"""

from __future__ import annotations

import importlib.util
import itertools
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiodicomweb import (
    AsyncDicomWebClient,
    ClientClosedError,
    DicomWebClient,
    DicomWebTransportError,
    DicomWebUsageError,
    MissingDependencyError,
)
from aiodicomweb._wire import WireTransport, _ResponseParser
from tests.support.rawserver import raw_server, reset

pytestmark = pytest.mark.anyio

JSON_HEAD = "HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n"
STUDY = '[{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}]'


def answer(data: bytes, hold: bool = False):
    """Send `data` on every connection; with `hold`, keep it open until the client closes."""

    def script(sock: socket.socket) -> None:
        sock.sendall(data)
        sock.settimeout(10)
        while hold and sock.recv(65536):
            pass  # the refusal must come from parsing, not from the end of the stream

    return lambda path: script


def chunked_answer(size_line: str, body: bytes = b"ab") -> bytes:
    head = JSON_HEAD + "Transfer-Encoding: chunked\r\n\r\n"
    return head.encode() + size_line.encode() + b"\r\n" + body + b"\r\n0\r\n\r\n"


def no_tls() -> Any:
    raise AssertionError("no TLS here")


async def search(url: str) -> list[dict[str, Any]]:
    async with AsyncDicomWebClient(url, retry=None, timeout=10) as client:
        return await client.search_studies()


MALFORMED = [
    # Chunk sizes that are not plain hex: -1 once looped forever without awaiting.
    *(
        pytest.param(chunked_answer(line), id=f"chunk-size-{name}")
        for name, line in [
            ("minus-one", "-1"),
            ("plus", "+2"),
            ("0x", "0x2"),
            ("underscore", "0_2"),
            ("leading-space", " 2"),
            ("overflow", "f" * 20),
        ]
    ),
    pytest.param(chunked_answer("4", b"ab"), id="chunk-shorter-than-its-size"),
    pytest.param(
        (JSON_HEAD + "Content-Length: 2\r\nContent-Length: 3\r\n\r\n[] ").encode(),
        id="conflicting-content-lengths",
    ),
    pytest.param((JSON_HEAD + "Content-Length: -2\r\n\r\n[]").encode(), id="negative-length"),
    pytest.param((JSON_HEAD + "Content-Length: 2, 3\r\n\r\n[]").encode(), id="length-list"),
    *(
        pytest.param(
            (JSON_HEAD + f"Transfer-Encoding: {coding}\r\n\r\n2\r\n[]\r\n0\r\n\r\n").encode(),
            id=f"transfer-encoding-{name}",
        )
        for name, coding in [
            ("chunked-gzip", "chunked, gzip"),
            ("gzip-chunked", "gzip, chunked"),
            ("substring", "xchunkedx"),
            ("gzip", "gzip"),
            ("stacked", "chunked\r\nTransfer-Encoding: chunked"),
        ]
    ),
    pytest.param((JSON_HEAD + "X-A: a\x00b\r\nContent-Length: 2\r\n\r\n[]").encode(), id="nul"),
    pytest.param((JSON_HEAD + "X-A : a\r\nContent-Length: 2\r\n\r\n[]").encode(), id="space-name"),
    pytest.param(b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", id="four-digit-status"),
    pytest.param(b"SMTP ready\r\n\r\n", id="not-http"),
    pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\nxx", id="upgrade"),
    pytest.param(b"HTTP/1.1 100 Continue\r\n\r\n" * 40, id="endless-100-continue"),
    pytest.param((JSON_HEAD + "X-Big: " + "a" * 70000 + "\r\n\r\n").encode(), id="huge-head"),
    pytest.param(JSON_HEAD.encode() + b"X-Endless: " + b"a" * 200_000, id="endless-head"),
]


@pytest.mark.parametrize("data", MALFORMED)
async def test_malformed_answers_are_refused_as_connection_errors(data: bytes) -> None:
    with raw_server(answer(data, hold=True)) as url:
        with pytest.raises(DicomWebTransportError) as caught:
            await search(url)
    assert isinstance(caught.value, ConnectionError)


ACCEPTED = [
    pytest.param(chunked_answer("2;name=value", b"[]"), id="chunk-extension"),
    pytest.param(chunked_answer("2", b"[]")[:-2] + b"X-Trailer: 1\r\n\r\n", id="trailer"),
    pytest.param(
        (JSON_HEAD + "Transfer-Encoding: Chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n").encode(),
        id="chunked-in-capitals",
    ),
    pytest.param(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
        + (JSON_HEAD + "Content-Length: 2\r\n\r\n[]").encode(),
        id="after-1xx-heads",
    ),
    pytest.param((JSON_HEAD + "\r\n[]").encode(), id="close-delimited"),
    pytest.param(  # werkzeug sends both; the chunks win, as in h11
        (
            JSON_HEAD
            + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n"
        ).encode(),
        id="length-and-chunked",
    ),
    pytest.param(
        (JSON_HEAD + "X-Folded: first\r\n  second\r\nContent-Length: 2\r\n\r\n[]").encode(),
        id="obs-fold",
    ),
]


@pytest.mark.parametrize("data", ACCEPTED)
async def test_answers_h11_accepts_are_read(data: bytes) -> None:
    with raw_server(answer(data)) as url:
        assert await search(url) == []


async def test_an_obs_folded_header_is_joined_with_a_space_as_h11_does() -> None:
    data = JSON_HEAD + 'Warning: 299 pacs\r\n "more results"\r\nContent-Length: 2\r\n\r\n[]'
    transport = WireTransport(httpx.MockTransport(lambda request: httpx.Response(500)), no_tls)
    with raw_server(answer(data.encode())) as url:
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get(url + "/studies")
    assert response.headers["warning"] == '299 pacs "more results"'


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_reset_after_part_of_a_close_delimited_body_is_an_error_not_its_end(
    scheme: str, certificates: Any, wire_tls: Any
) -> None:
    def script(sock: socket.socket) -> None:
        sock.sendall((JSON_HEAD + "\r\n").encode() + STUDY.encode()[:10])
        time.sleep(0.2)
        reset(sock)

    tls = wire_tls if scheme == "https" else None
    with raw_server(lambda path: script, tls=tls) as url:
        async with AsyncDicomWebClient(url, retry=None, verify=certificates.ca) as client:
            with pytest.raises(DicomWebTransportError, match="reset"):
                await client.search_studies()


@pytest.mark.parametrize("notify", [True, False], ids=["close-notify", "bare-close"])
async def test_a_tls_close_ends_a_close_delimited_body_as_in_httpx(
    notify: bool, certificates: Any, wire_tls: Any
) -> None:
    def script(sock: socket.socket) -> None:
        sock.sendall((JSON_HEAD + "\r\n" + STUDY).encode())
        if notify:
            sock = sock.unwrap()  # type: ignore[attr-defined]
        sock.shutdown(socket.SHUT_RDWR)

    with raw_server(lambda path: script, tls=wire_tls) as url:
        async with AsyncDicomWebClient(url, retry=None, verify=certificates.ca) as client:
            assert len(await client.search_studies()) == 1


class OpensslServer:
    """`openssl s_server` on loopback, one connection: what it reads is collected, what
    is written to its stdin is sent, and lines `r` (renegotiate) or `K` (key update,
    answer requested) are its commands, which Python's ssl module cannot give a server."""

    def __init__(self, certificate: Path, protocol: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process = subprocess.Popen(
            ["openssl", "s_server", "-accept", f"127.0.0.1:{self.port}", "-cert",
             str(certificate), protocol, "-naccept", "1"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.output = bytearray()
        threading.Thread(target=self._collect, daemon=True).start()
        self.wait_for(b"ACCEPT")  # listening

    def _collect(self) -> None:
        assert self.process.stdout is not None
        while data := self.process.stdout.read1(4096):
            self.output += data

    def wait_for(self, text: bytes, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert time.monotonic() < deadline, (
                f"no {text!r} from s_server: {self.output[-500:]!r}"
            )
            time.sleep(0.02)

    def send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()
        time.sleep(0.3)  # s_server reads stdin in its own time: one write, one read

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.mark.parametrize(
    ("protocol", "command", "handshakes"),
    [
        pytest.param("-tls1_2", b"r\n", 2, id="tls1.2-renegotiation"),
        pytest.param("-tls1_3", b"K\n", 1, id="tls1.3-key-update"),
    ],
)
async def test_a_server_renegotiating_or_updating_keys_mid_answer_is_answered(
    protocol: str, command: bytes, handshakes: int, certificates: Any
) -> None:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed (scripts/install-orthanc.sh installs it)")
    server = OpensslServer(certificates.server, protocol)
    body = ("[" + ",".join([STUDY[1:-1]] * 2) + "]").encode()  # two datasets
    head = (JSON_HEAD + f"Content-Length: {len(body)}\r\n\r\n").encode()
    try:
        async with AsyncDicomWebClient(
            f"https://127.0.0.1:{server.port}", verify=certificates.ca, retry=None, timeout=10
        ) as client, anyio.create_task_group() as group:  # fmt: skip
            found: list[Any] = []

            async def search() -> None:
                found.extend(await client.search_studies())

            group.start_soon(search)
            await anyio.to_thread.run_sync(server.wait_for, b"GET /studies")
            for data in (head + body[:20], command, body[20:]):
                await anyio.to_thread.run_sync(server.send, data)
        assert len(found) == 2  # the body's second half came under the new keys
        # TLS 1.2: the server's new handshake completed, with the client's answers.
        # s_server's count at the close: a renegotiation finishes only if the client,
        # reading the body, also sent its part of the new handshake.
        server.wait_for(b"%d server accepts that finished" % handshakes)
    finally:
        server.stop()


# -- closed means closed -------------------------------------------------------------

ASYNC_CALLS = [
    pytest.param(lambda c, d: c.search_studies(), id="search_studies"),
    pytest.param(lambda c, d: c.search_series("1.2"), id="search_series"),
    pytest.param(lambda c, d: c.retrieve_instance("1.2", "1.3", "1.4"), id="retrieve_instance"),
    pytest.param(lambda c, d: c.retrieve_series_metadata("1.2", "1.3"), id="metadata"),
    pytest.param(lambda c, d: c.retrieve_frames("1.2", "1.3", "1.4", [1]), id="frames"),
    pytest.param(lambda c, d: c.download_series("1.2", "1.3", d / "out"), id="download"),
    pytest.param(
        lambda c, d: c.download_series("1.2", "1.3", d / "o", strategy="per_instance"),
        id="download_per_instance",
    ),
    pytest.param(lambda c, d: c.download_study("1.2", d / "out"), id="download_study"),
    pytest.param(lambda c, d: c.store([b"DICM"]), id="store"),
    pytest.param(lambda c, d: c.delete_study("1.2"), id="delete"),
]


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("call", ASYNC_CALLS)
async def test_every_call_on_a_closed_client_is_refused_before_any_request(
    call: Any, scheme: str, tmp_path: Path
) -> None:
    heads: list[bytes] = []
    with raw_server(answer((JSON_HEAD + "Content-Length: 2\r\n\r\n[]").encode()), heads) as url:
        client = AsyncDicomWebClient(url.replace("http:", f"{scheme}:"), retry=None)
        await client.aclose()
        with pytest.raises(ClientClosedError, match="closed"):
            await call(client, tmp_path)
        with pytest.raises(ClientClosedError):
            async with client.stream_series("1.2", "1.3"):
                pass
        with pytest.raises(ClientClosedError):
            async for _ in client.search_pages("studies"):
                pass
    assert heads == []
    assert list(tmp_path.iterdir()) == []
    assert isinstance(ClientClosedError("x"), (RuntimeError, DicomWebUsageError))


def test_every_call_on_a_closed_sync_client_is_refused_before_any_request(
    tmp_path: Path,
) -> None:
    heads: list[bytes] = []
    with raw_server(answer((JSON_HEAD + "Content-Length: 2\r\n\r\n[]").encode()), heads) as url:
        client = DicomWebClient(url, retry=None)
        client.close()
        with pytest.raises(ClientClosedError):
            client.search_studies()
        with pytest.raises(ClientClosedError):
            client.download_series("1.2", "1.3", tmp_path / "out")
        with pytest.raises(ClientClosedError):
            list(client.search_pages("studies"))
        with pytest.raises(ClientClosedError):
            with client.stream_series("1.2", "1.3"):
                pass
    assert heads == []


# -- extras ---------------------------------------------------------------------------


def test_http2_without_h2_is_refused_at_construction_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "h2" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(MissingDependencyError, match=r'pip install "aiodicomweb\[http2\]"') as e:
        AsyncDicomWebClient("https://pacs.test/dicom-web", http2=True)
    assert isinstance(e.value, ImportError)
    AsyncDicomWebClient("https://pacs.test/dicom-web")  # HTTP/1.1 needs nothing more


async def test_a_client_that_never_connects_over_tls_builds_no_tls_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ssl

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an SSLContext was built for a plain-http client")

    monkeypatch.setattr(ssl, "create_default_context", refuse)
    with raw_server(answer((JSON_HEAD + "Content-Length: 2\r\n\r\n[]").encode())) as url:
        async with AsyncDicomWebClient(url, retry=None) as client:
            assert await client.search_studies() == []
    await anyio.lowlevel.checkpoint()


# -- memory -----------------------------------------------------------------------------


@pytest.mark.orthanc
async def test_downloaded_bytes_are_freed_without_waiting_for_the_cyclic_collector(
    orthanc: Any, corpus: Any, tmp_path: Path
) -> None:
    import gc
    import tracemalloc

    from tests.support.dicomgen import TEST_CORPUS

    spec = TEST_CORPUS[0]
    gc.collect()
    gc.disable()  # what is freed now is freed by reference counting alone
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        async with AsyncDicomWebClient(orthanc.dicomweb_url) as client:
            result = await client.download_series(
                spec.study_uid, spec.series_uid, tmp_path / "out", strategy="per_instance"
            )
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        gc.enable()
    # Per-instance answers once stayed in memory until a full collection.
    assert retained < result.bytes / 4


# -- the response parser, sans I/O, fuzzed -------------------------------------------


def parse_in_pieces(data: bytes, cuts: list[int]) -> _ResponseParser:
    parser = _ResponseParser()
    view = memoryview(data)
    edges = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    for start, end in itertools.pairwise(edges):
        if end > start:
            parser.feed(view[start:end])
    return parser


BODY = st.binary(max_size=3000)


@settings(max_examples=200, deadline=None)
@given(body=BODY, sizes=st.lists(st.integers(1, 700), min_size=1), cuts=st.lists(st.integers()))
def test_chunked_bodies_parse_alike_however_they_are_split(
    body: bytes, sizes: list[int], cuts: list[int]
) -> None:
    chunks, rest = [], body
    while rest:
        size = sizes[len(chunks) % len(sizes)]
        chunks.append(b"%x\r\n%s\r\n" % (size if size < len(rest) else len(rest), rest[:size]))
        rest = rest[size:]
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(chunks)
    parser = parse_in_pieces(data + b"0\r\n\r\n", cuts)
    assert parser.complete and parser.reusable()
    assert b"".join(parser.pieces) == body


@settings(max_examples=200, deadline=None)
@given(body=BODY, cuts=st.lists(st.integers()))
def test_counted_bodies_parse_alike_however_they_are_split(body: bytes, cuts: list[int]) -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    parser = parse_in_pieces(data, cuts)
    assert parser.complete and parser.status == 200
    assert b"".join(parser.pieces) == body


@settings(max_examples=500, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=400),
        st.builds(
            lambda head, junk: b"HTTP/1.1 200 OK\r\n" + head + b"\r\n\r\n" + junk,
            st.binary(max_size=200),
            st.binary(max_size=200),
        ),
    ),
    cuts=st.lists(st.integers()),
)
def test_any_bytes_parse_or_fail_as_a_protocol_error(data: bytes, cuts: list[int]) -> None:
    try:
        parser = parse_in_pieces(data, cuts)
        parser.end_of_stream()
    except httpx.RemoteProtocolError:
        return
    assert parser.head_done and parser.complete


@pytest.mark.parametrize(("framing", "connections"), [
    pytest.param("Transfer-Encoding: chunked\r\n", 1, id="chunked-reused"),
    pytest.param("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 2, id="both-not-reused"),
])  # fmt: skip
async def test_an_answer_with_length_and_chunks_never_leaves_its_connection_for_reuse(
    framing: str, connections: int
) -> None:
    answer = (JSON_HEAD + framing + "\r\n2\r\n[]\r\n0\r\n\r\n").encode()
    accepted: list[socket.socket] = []
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while len(accepted) < 2:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            accepted.append(sock)
            threading.Thread(target=keep_answering, args=(sock,), daemon=True).start()

    def keep_answering(sock: socket.socket) -> None:
        with sock:
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
                while b"\r\n\r\n" in data:
                    _, data = data.split(b"\r\n\r\n", 1)
                    sock.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/dicom-web"
    try:
        async with AsyncDicomWebClient(url, retry=None) as client:
            assert await client.search_studies() == []
            assert await client.search_studies() == []
    finally:
        listener.close()
    assert len(accepted) == connections
