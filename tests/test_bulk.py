"""The lean HTTP/1.1 wire for WADO-RS bodies: framing, routing and protocol errors.

Real sockets (the scripted loopback server) for what the wire reads; the
Orthanc suites already run every WADO stream through it.
"""

from __future__ import annotations

import gc
import socket
import ssl
import threading
import time
import warnings

import anyio
import httpx
import pytest

from aiodicomweb import (
    AsyncDicomWebClient,
    DicomWebHTTPError,
    DicomWebTransportError,
    DicomWebUsageError,
    MultipartError,
)
from aiodicomweb._wire import WireTransport
from tests.support.orthanc import free_port
from tests.support.rawserver import raw_server

pytestmark = pytest.mark.anyio

BOUNDARY = "bulk-boundary"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
BODIES = [b"first instance " * 100, b"", b"third \r\n--bulk-bound instance" * 50]
STUDY, SERIES = "1.2.3", "1.2.3.4"


def multipart() -> bytes:
    parts = [
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + body + b"\r\n"
        for body in BODIES
    ]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def chunked(data: bytes, size: int) -> bytes:
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    encoded = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces)
    return encoded + b"0\r\nX-Trailer: yes\r\n\r\n"


def answer(head: str, body: bytes):
    def script(sock: socket.socket) -> None:
        sock.sendall(head.encode() + b"\r\n" + body)

    return lambda path: script


async def series_bodies(url: str) -> list[bytes]:
    async with AsyncDicomWebClient(url, retry=None) as client:
        return await client.retrieve_series(STUDY, SERIES)


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(f"HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\n", id="close-delimited"),
        pytest.param(
            f"HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\n"
            f"Content-Length: {len(multipart())}\r\n",
            id="content-length",
        ),
        pytest.param(
            f"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\n",
            id="after-100-continue",
        ),
    ],
)  # fmt: skip
async def test_bodies_are_read_whatever_the_framing(head):
    with raw_server(answer(head, multipart())) as url:
        assert await series_bodies(url) == BODIES


@pytest.mark.parametrize("size", [1, 7, 4096, 1 << 20])
async def test_chunked_bodies_are_decoded(size):
    head = f"HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nTransfer-Encoding: chunked\r\n"
    with raw_server(answer(head, chunked(multipart(), size))) as url:
        assert await series_bodies(url) == BODIES


@pytest.mark.parametrize(
    ("head", "body", "error"),
    [
        pytest.param("HTTP/1.1 200 OK\r\nContent-Type: " + CONTENT_TYPE + "\r\nContent-Length: "
                     + str(len(multipart()) + 10) + "\r\n", multipart()[:-100],
                     DicomWebTransportError, id="content-length-cut-short"),
        pytest.param("HTTP/1.1 200 OK\r\nContent-Type: " + CONTENT_TYPE
                     + "\r\nTransfer-Encoding: chunked\r\n", chunked(multipart(), 50)[:-30],
                     DicomWebTransportError, id="chunked-cut-short"),
        pytest.param("HTTP/1.1 200 OK\r\nContent-Type: " + CONTENT_TYPE
                     + "\r\nTransfer-Encoding: chunked\r\n", b"zz\r\n",
                     DicomWebTransportError, id="bad-chunk-size"),
        pytest.param("HTTP/1.1 200 OK\r\nContent-Type: " + CONTENT_TYPE + "\r\n",
                     multipart()[:-50], MultipartError, id="close-delimited-cut-short"),
        pytest.param("SMTP ready\r\n", b"", DicomWebTransportError, id="not-http"),
        pytest.param("HTTP/1.1 200 OK\r\nbroken header line\r\n", b"", DicomWebTransportError,
                     id="malformed-header"),
        pytest.param("HTTP/1.1 200 OK\r\nX-Big: " + "a" * 70000 + "\r\n", b"",
                     DicomWebTransportError, id="head-too-large"),
    ],
)  # fmt: skip
async def test_protocol_errors_are_connection_errors(head, body, error):
    with raw_server(answer(head, body)) as url:
        with pytest.raises(error) as caught:
            await series_bodies(url)
    assert isinstance(caught.value, ConnectionError)


async def test_a_bulk_request_to_a_closed_port_is_a_transport_error():
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    with pytest.raises(DicomWebTransportError):
        await series_bodies(url)


async def test_only_gets_take_the_fast_path():
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url}")
        return httpx.Response(200, json=[])

    transport = WireTransport(httpx.MockTransport(handler), ssl.create_default_context)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.post("http://pacs.test/stow")  # not a GET: httpx's own transport
        await client.delete("https://pacs.test/studies/1")
        await client.get("ftp://pacs.test/qido")  # not http(s): httpx's own transport
        for scheme in ("http", "https"):  # GETs: the fast path, and no server there
            with pytest.raises(httpx.ConnectError):
                await client.get(f"{scheme}://127.0.0.1:{free_port()}/qido")
    assert seen == ["POST http://pacs.test/stow", "DELETE https://pacs.test/studies/1",
                    "GET ftp://pacs.test/qido"]  # fmt: skip


def keep_alive_server(connections: list[int], answers_per_connection: int | None = None):
    """Answers every request on a connection with a small JSON body, keeping it open."""

    def route(path: str):
        def script(sock: socket.socket) -> None:
            connections.append(1)
            served = 0
            body = b"[]"
            while True:
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n"
                             b"Content-Length: 2\r\n\r\n" + body)  # fmt: skip
                served += 1
                if answers_per_connection is not None and served >= answers_per_connection:
                    return  # close: the client must notice before or on reuse
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    head += chunk

        return script

    return route


async def test_connections_are_reused_for_gets_with_a_known_length():
    connections: list[int] = []
    with raw_server(keep_alive_server(connections)) as url:
        async with AsyncDicomWebClient(url, retry=None) as client:
            for _ in range(5):
                assert await client.search_studies() == []
    assert len(connections) == 1


async def test_a_connection_the_server_closed_is_replaced_transparently():
    connections: list[int] = []
    with raw_server(keep_alive_server(connections, answers_per_connection=1)) as url:
        async with AsyncDicomWebClient(url, retry=None) as client:
            for _ in range(4):
                assert await client.search_studies() == []
    assert len(connections) == 4


async def test_no_content_answers_end_without_waiting_for_a_close():
    def route(path: str):
        def script(sock: socket.socket) -> None:
            sock.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
            time.sleep(5)  # keeps the connection open: a client reading to EOF would hang

        return script

    with raw_server(route) as url:
        async with AsyncDicomWebClient(url, retry=None, timeout=httpx.Timeout(2.0)) as client:
            assert await client.search_studies() == []


async def test_request_head_carries_auth():
    heads: list[bytes] = []

    def route(path: str):
        def script(sock: socket.socket) -> None:
            sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\n\r\n".encode()
                         + multipart())  # fmt: skip

        return script

    with raw_server(route, heads=heads) as url:
        async with AsyncDicomWebClient(url, auth=("user", "pw"), retry=None) as client:
            await client.retrieve_series(STUDY, SERIES)
    (head,) = heads
    assert b"\r\nAuthorization: Basic dXNlcjpwdw==\r\n" in head
    assert head.startswith(f"GET /dicom-web/studies/{STUDY}/series/{SERIES} HTTP/1.1".encode())


async def test_max_connections_bounds_the_lean_wire_too():
    active: list[int] = []
    peak: list[int] = [0]
    lock = threading.Lock()

    def route(path: str):
        def script(sock: socket.socket) -> None:
            with lock:
                active.append(1)
                peak[0] = max(peak[0], len(active))
            try:
                while True:
                    time.sleep(0.05)  # slow enough that requests overlap
                    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n"
                                 b"Content-Length: 2\r\n\r\n[]")  # fmt: skip
                    head = b""
                    while b"\r\n\r\n" not in head:
                        chunk = sock.recv(65536)
                        if not chunk:
                            return
                        head += chunk
            finally:
                with lock:
                    active.pop()

        return script

    with raw_server(route) as url:
        async with AsyncDicomWebClient(url, retry=None, max_connections=2) as client:
            async with anyio.create_task_group() as group:
                for _ in range(10):
                    group.start_soon(client.search_studies)
    assert peak[0] == 2


async def test_small_bodies_cut_short_fail_and_give_their_connection_slot_back_once():
    def route(path: str):
        def script(sock: socket.socket) -> None:
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n"
                         b"Content-Length: 100\r\n\r\n[{}, {}")  # fmt: skip

        return script

    with raw_server(route) as url:
        async with AsyncDicomWebClient(url, retry=None, max_connections=2) as client:
            for _ in range(5):
                with pytest.raises(DicomWebTransportError, match="before the end of the body"):
                    await client.search_studies()
            wire = client._session.requester.direct.wire
            assert wire._slots is not None and wire._slots.value == 2  # no leak, no double release


SOP = "1.2.3.4.5"
INJECTIONS = [
    pytest.param(lambda c: c.retrieve_series(STUDY, SERIES, transfer_syntax="1.2\r\nX-Evil: 1"),
                 id="transfer-syntax"),
    pytest.param(lambda c: c.retrieve_frames(STUDY, SERIES, SOP, [1],
                                             media_type="image/jpeg\r\nX-Evil: 1"),
                 id="frame-type"),
    pytest.param(lambda c: c.retrieve_rendered(STUDY, SERIES, SOP,
                                               media_type="image/png\nX-Evil: 1"),
                 id="rendered-type"),
]  # fmt: skip


@pytest.mark.parametrize("call", INJECTIONS)
async def test_line_breaks_in_accept_values_are_usage_errors_before_any_request(call):
    heads: list[bytes] = []
    with raw_server(answer("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", b""), heads=heads) as url:
        async with AsyncDicomWebClient(url, retry=None) as client:
            with pytest.raises(DicomWebUsageError):
                await call(client)
    assert heads == []


async def test_a_header_value_with_a_line_break_is_refused_before_any_request():
    heads: list[bytes] = []
    with raw_server(answer("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", b""), heads=heads) as url:
        with pytest.raises(DicomWebUsageError, match="X-Site"):
            AsyncDicomWebClient(url, retry=None, headers={"X-Site": "north\r\nX-Evil: 1"})
        transport = WireTransport(httpx.MockTransport(lambda r: httpx.Response(500)), no_tls)
        origin = ("http", "127.0.0.1", int(url.split(":")[2].split("/")[0]))
        for name, value in [(b"X-Site", b"north\r\nX-Evil: 1"), (b"X Site", b"1")]:
            with pytest.raises(httpx.LocalProtocolError):  # the fast path checks again
                await transport.get(origin, b"/", [(b"Host", b"x"), (name, value)], {})
    assert heads == []


def no_tls() -> ssl.SSLContext:
    raise AssertionError("no TLS here")


async def test_an_invalid_content_length_fails_and_closes_the_connection():
    head = "HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\nContent-Length: 2x\r\n"
    with raw_server(answer(head, b"[]")) as url:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            async with AsyncDicomWebClient(url, retry=None) as client:
                with pytest.raises(DicomWebTransportError, match="Content-Length"):
                    await client.search_studies()
            gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


async def test_a_status_without_reason_phrase_gets_the_standard_one() -> None:
    def unauthorized(sock: socket.socket) -> None:
        sock.sendall(b"HTTP/1.1 401 \r\nContent-Length: 0\r\n\r\n")

    with raw_server(lambda path: unauthorized) as url:
        async with AsyncDicomWebClient(url, retry=None) as client:
            with pytest.raises(DicomWebHTTPError) as caught:
                await client.search_studies()
    assert "401 Unauthorized" in str(caught.value)
