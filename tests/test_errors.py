"""Error translation, response checks and secrets, through the client on every path.

Server faults must surface as `DicomWebError` + `ConnectionError` with enough to
diagnose them; caller mistakes as `ValueError` before any request; nothing from
httpx or tenacity may escape; credentials appear nowhere.

The servers are MockTransport handlers; the tests that take the `wire` fixture
(tests/support/matrix.py) serve them over real sockets on each production path
(plain http, https, httpx's transport). The few left on MockTransport say why.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from aiodicomweb import (
    AsyncDicomWebClient,
    BearerTokenAuth,
    DicomWebError,
    DicomWebHTTPError,
    DicomWebTransportError,
    DicomWebUsageError,
    MultipartError,
    RetryPolicy,
    UnexpectedResponseError,
)
from tests.support.matrix import Wire, parametrize_wire

BASE = "http://pacs.test/dicom-web"
STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.1.1"
SOP = "1.2.826.0.1.3680043.8.498.1.1.1"
MULTIPART_TYPE = 'multipart/related; type="application/dicom"; boundary=XX'
DICOM_JSON = "application/dicom+json"
OCTET_STREAM = "application/octet-stream"

PASSWORD = "hunter2-secret"
TOKEN = "tok-SECRET-123"
BASIC = base64.b64encode(f"user:{PASSWORD}".encode()).decode()
SECRETS = (PASSWORD, TOKEN, BASIC)

Answer = Callable[[httpx.Request], httpx.Response]
TokenSource = Callable[[], "str | Awaitable[str]"]
Operation = Callable[[AsyncDicomWebClient, Path], Awaitable[object]]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_wire(metafunc)  # tests on the wire: the matrix's backend and path pairs


# -- helpers -----------------------------------------------------------------------


class Server:
    """A scripted handler: the answers in order, the last one repeated.

    `authorizations` keeps each request's Authorization header as it was sent: an
    auth flow may resend the same request object with a new header.
    """

    def __init__(self, *answers: Answer | Exception) -> None:
        self.answers = answers
        self.requests: list[httpx.Request] = []
        self.authorizations: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.authorizations.append(request.headers.get("authorization"))
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer(request)

    @property
    def calls(self) -> int:
        return len(self.requests)


def status(
    code: int,
    headers: dict[str, str] | list[tuple[bytes, bytes]] | None = None,
    content: bytes = b"",
) -> Answer:
    return lambda request: httpx.Response(code, headers=headers, content=content)


def json_answer(text: str, content_type: str = DICOM_JSON) -> Answer:
    return status(200, {"Content-Type": content_type}, text.encode())


class BreakingStream(httpx.AsyncByteStream):
    """A body that sends `head`, then the connection breaks."""

    def __init__(self, head: bytes) -> None:
        self.head = head

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.head
        raise httpx.ReadError("connection reset by peer")


class CountingStream(httpx.AsyncByteStream):
    """A large body produced lazily, counting how much of it the client pulled."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total = total
        self.chunk = chunk
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.pulled < self.total:
            size = min(self.chunk, self.total - self.pulled)
            self.pulled += size
            yield b"E" * size


def quick_policy() -> RetryPolicy:
    """Two attempts, no real sleep: exercises the retry machinery without waiting."""

    async def no_sleep(seconds: float) -> None:
        pass

    return RetryPolicy(max_attempts=2, jitter=0, sleep=no_sleep)


def mock_client_for(
    server: Server, retry: RetryPolicy | None = None, *, url: str = BASE, **options: Any
) -> AsyncDicomWebClient:
    """A client on MockTransport, for what a socket cannot show."""
    return AsyncDicomWebClient(url, transport=httpx.MockTransport(server), retry=retry, **options)


async def failure_of(awaitable: Awaitable[object]) -> Exception:
    """The exception `awaitable` raises, whatever its type (the type is under test)."""
    try:
        await awaitable
    except Exception as error:
        return error
    pytest.fail("expected an error")


def assert_ours(error: BaseException) -> None:
    """Only aiodicomweb errors or plain builtin OSErrors may reach the caller."""
    kind = type(error)
    ours = kind.__module__.startswith("aiodicomweb")
    builtin_os = kind.__module__ == "builtins" and issubclass(kind, OSError)
    assert ours or builtin_os, f"{kind.__module__}.{kind.__qualname__} escaped: {error!r}"


def assert_server_side(error: BaseException) -> None:
    assert_ours(error)
    assert isinstance(error, DicomWebError), repr(error)
    assert isinstance(error, ConnectionError), repr(error)
    assert not isinstance(error, ValueError), repr(error)


# -- operations, each one transaction of the public API ----------------------------------


async def op_search(client: AsyncDicomWebClient, tmp: Path) -> object:
    return await client.search_studies({"PatientID": "P1"})


async def op_metadata(client: AsyncDicomWebClient, tmp: Path) -> object:
    return await client.retrieve_series_metadata(STUDY, SERIES)


async def op_instance(client: AsyncDicomWebClient, tmp: Path) -> object:
    return await client.retrieve_instance(STUDY, SERIES, SOP)


async def op_frames(client: AsyncDicomWebClient, tmp: Path) -> object:
    return await client.retrieve_frames(STUDY, SERIES, SOP, [1, 2])


async def op_stream(client: AsyncDicomWebClient, tmp: Path) -> object:
    async with client.stream_series(STUDY, SERIES) as parts:
        return [await part.read() async for part in parts]


async def op_delete(client: AsyncDicomWebClient, tmp: Path) -> object:
    await client.delete_study(STUDY)
    return None


async def op_store(client: AsyncDicomWebClient, tmp: Path) -> object:
    return await client.store([b"not really dicom"])


async def op_download(client: AsyncDicomWebClient, tmp: Path) -> object:
    return await client.download_series(STUDY, SERIES, tmp / "dest")


# The third value is the request's URL after the client's base URL.
OPERATIONS = [
    pytest.param(op_search, "GET", "/studies?PatientID=P1", id="search"),
    pytest.param(op_metadata, "GET", f"/studies/{STUDY}/series/{SERIES}/metadata", id="metadata"),
    pytest.param(
        op_instance,
        "GET",
        f"/studies/{STUDY}/series/{SERIES}/instances/{SOP}",
        id="instance",
    ),
    pytest.param(
        op_frames,
        "GET",
        f"/studies/{STUDY}/series/{SERIES}/instances/{SOP}/frames/1,2",
        id="frames",
    ),
    pytest.param(op_stream, "GET", f"/studies/{STUDY}/series/{SERIES}", id="stream"),
    pytest.param(op_delete, "DELETE", f"/studies/{STUDY}", id="delete"),
    pytest.param(op_store, "POST", "/studies", id="store"),
    pytest.param(op_download, "GET", f"/studies/{STUDY}/series/{SERIES}", id="download"),
]


# -- server errors -----------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(("operation", "method", "path"), OPERATIONS)
@pytest.mark.parametrize("code", [401, 403, 404, 500, 503])
async def test_error_status_is_http_error_with_status_method_url_and_excerpt(
    operation: Operation, method: str, path: str, code: int, tmp_path: Path, wire: Wire
) -> None:
    server = Server(status(code, {"Content-Type": "text/plain"}, b"the server says:\n  no way"))
    async with wire.client(server) as client:
        with pytest.raises(DicomWebHTTPError) as caught:
            await operation(client, tmp_path)
    url = wire.url + path
    error = caught.value
    assert_server_side(error)
    assert error.status == code
    assert error.method == method
    assert error.url == url
    assert error.body_excerpt == "the server says: no way"
    assert str(code) in str(error)
    assert url in str(error)
    assert server.calls == 1
    assert os.listdir(tmp_path) == []


@pytest.mark.anyio
async def test_400_on_search_is_http_error_not_value_error(wire: Wire) -> None:
    server = Server(status(400, content=b"bad query"))
    async with wire.client(server) as client:
        with pytest.raises(DicomWebHTTPError) as caught:
            await client.search_studies({"PatientName": "DOE^J*"})
    assert_server_side(caught.value)
    assert caught.value.status == 400
    assert caught.value.body_excerpt == "bad query"


@pytest.mark.anyio
async def test_405_on_delete_keeps_the_details_and_points_at_the_orthanc_strategy(
    wire: Wire,
) -> None:
    server = Server(status(405, content=b"Method Not Allowed"))
    async with wire.client(server) as client:
        with pytest.raises(DicomWebHTTPError) as caught:
            await client.delete_study(STUDY)
    error = caught.value
    assert_server_side(error)
    assert (error.status, error.method) == (405, "DELETE")
    assert error.url == f"{wire.url}/studies/{STUDY}"
    assert error.body_excerpt == "Method Not Allowed"
    assert "delete_strategy='orthanc'" in str(error)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "operation",
    [pytest.param(op_search, id="buffered"), pytest.param(op_stream, id="streamed")],
)
async def test_huge_error_body_gives_a_bounded_excerpt_and_is_not_read_whole(
    operation: Operation, tmp_path: Path, wire: Wire
) -> None:
    body = CountingStream(10 * 1024 * 1024)
    server = Server(lambda request: httpx.Response(500, stream=body))
    async with wire.client(server) as client:
        with pytest.raises(DicomWebHTTPError) as caught:
            await operation(client, tmp_path)
    error = caught.value
    assert 0 < len(error.body_excerpt) <= 1024
    assert len(str(error)) <= 2048
    assert len(repr(error)) <= 2048
    # One 1 MiB read at most, and what TLS buffers ahead of it: a fifth of the body.
    assert body.pulled <= 2 * 1024 * 1024


@pytest.mark.anyio
async def test_huge_in_memory_error_body_gives_a_bounded_excerpt(wire: Wire) -> None:
    server = Server(status(500, {"Content-Type": "text/html"}, b"<p>" + b"x" * 10_000_000))
    async with wire.client(server) as client:
        with pytest.raises(DicomWebHTTPError) as caught:
            await client.search_studies()
    assert caught.value.body_excerpt.startswith("<p>xxx")
    assert len(caught.value.body_excerpt) <= 1024
    assert len(str(caught.value)) <= 2048


# -- caller errors ------------------------------------------------------------------------


def _other_host(url: str) -> str:
    """`url` on another host, same scheme and port."""
    return str(httpx.URL(url).copy_with(host="evil.test"))


def _other_scheme(url: str) -> str:
    """`url` with http and https swapped, same host and port."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(scheme="https" if parsed.scheme == "http" else "http"))


async def bad_stream_uid(client: AsyncDicomWebClient, tmp: Path) -> object:
    async with client.stream_series(STUDY, "1.2/../3"):
        pytest.fail("must not open")
    return None


CALLER_ERRORS = [
    pytest.param(lambda c, t: c.retrieve_instance(STUDY, SERIES, "1..2"), id="invalid-sop-uid"),
    pytest.param(lambda c, t: c.search_series("../etc"), id="invalid-study-uid-in-search"),
    pytest.param(lambda c, t: c.retrieve_series_metadata(STUDY, ""), id="empty-series-uid"),
    pytest.param(lambda c, t: c.delete_study("1.2.3."), id="invalid-uid-in-delete"),
    pytest.param(bad_stream_uid, id="invalid-uid-in-stream"),
    pytest.param(lambda c, t: c.download_series("x", SERIES, t / "d"), id="invalid-uid-download"),
    pytest.param(lambda c, t: c.store([b"x"], study_uid="1.2.x"), id="invalid-uid-in-store"),
    pytest.param(lambda c, t: c.search_studies({"NotAKeyword": "x"}), id="unknown-query-key"),
    pytest.param(
        lambda c, t: c.search_studies(include_fields=["Bogus"]), id="unknown-include-field"
    ),
    pytest.param(lambda c, t: c.search_studies(limit=-1), id="negative-limit"),
    pytest.param(lambda c, t: c.search_studies({"PatientName": True}), id="bool-match-value"),
    pytest.param(lambda c, t: c.retrieve_frames(STUDY, SERIES, SOP, [0]), id="frame-zero"),
    pytest.param(lambda c, t: c.retrieve_frames(STUDY, SERIES, SOP, [-1]), id="frame-negative"),
    pytest.param(lambda c, t: c.retrieve_frames(STUDY, SERIES, SOP, []), id="no-frames"),
    pytest.param(lambda c, t: c.retrieve_frames(STUDY, SERIES, SOP, [True]), id="frame-bool"),
    pytest.param(lambda c, t: c.retrieve_frames(STUDY, SERIES, SOP, [1.5]), id="frame-fraction"),
    pytest.param(
        lambda c, t: c.retrieve_bulkdata(_other_host(c.url) + "/bulk/1"),
        id="bulkdata-other-host",
    ),
    pytest.param(
        lambda c, t: c.retrieve_bulkdata(_other_scheme(c.url) + "/bulk/1"),
        id="bulkdata-other-scheme",
    ),
    pytest.param(
        lambda c, t: c.retrieve_bulkdata("//evil.test/bulk/1"), id="bulkdata-scheme-relative"
    ),
    pytest.param(
        lambda c, t: c.retrieve_bulkdata("bulk/1", byte_range=(10, 5)), id="bulkdata-bad-range"
    ),
    pytest.param(lambda c, t: c.retrieve_bulkdata("bulk/a\x7fb"), id="bulkdata-invalid-url"),
    pytest.param(
        lambda c, t: c.download_series(STUDY, SERIES, t / "d", strategy="bogus"),
        id="unknown-strategy",
    ),
    pytest.param(
        lambda c, t: c.download_series(STUDY, SERIES, t / "d", concurrency=0),
        id="zero-concurrency",
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize("operation", CALLER_ERRORS)
async def test_caller_errors_are_value_errors_raised_before_any_request(
    operation: Operation, tmp_path: Path, wire: Wire
) -> None:
    server = Server(status(200))
    async with wire.client(server, quick_policy()) as client:
        with pytest.raises(ValueError) as caught:
            await operation(client, tmp_path)
    assert_ours(caught.value)
    assert isinstance(caught.value, DicomWebUsageError)
    assert not isinstance(caught.value, ConnectionError)
    assert server.calls == 0
    assert os.listdir(tmp_path) == []


@pytest.mark.anyio
async def test_search_pages_bad_page_size_is_a_caller_error(wire: Wire) -> None:
    server = Server(json_answer("[]"))
    async with wire.client(server) as client:
        with pytest.raises(DicomWebUsageError):
            async for _ in client.search_pages("studies", page_size=0):
                pass
    assert server.calls == 0


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"url": "ftp://pacs.test/dicom-web"}, id="not-http"),
        pytest.param({"url": "pacs.test/dicom-web"}, id="no-scheme"),
        pytest.param({"timeout": None}, id="no-timeout"),
        pytest.param({"delete_strategy": "bogus"}, id="unknown-delete-strategy"),
        pytest.param({"qido_url_prefix": ""}, id="empty-qido-prefix"),
        pytest.param({"wado_url_prefix": "/"}, id="empty-wado-prefix"),
    ],
)
def test_invalid_constructor_arguments_are_caller_errors(options: dict[str, object]) -> None:
    arguments: dict[str, object] = {"url": BASE, **options}
    with pytest.raises(DicomWebUsageError):
        AsyncDicomWebClient(**arguments)  # type: ignore[arg-type]


# -- nothing from httpx or tenacity escapes ---------------------------------------------


def _breaking(request: httpx.Request) -> httpx.Response:
    head = b"--XX\r\nContent-Type: application/dicom\r\n\r\npartial"
    return httpx.Response(
        200, headers={"Content-Type": MULTIPART_TYPE}, stream=BreakingStream(head)
    )


def _redirect_loop(request: httpx.Request) -> httpx.Response:
    return httpx.Response(302, headers={"Location": str(request.url)})


def _undecodable_gzip(request: httpx.Request) -> httpx.Response:
    # A ByteStream, not content=: httpx would decode content= in this very constructor,
    # and the handler, not the client, would meet the broken gzip.
    headers = {"Content-Type": MULTIPART_TYPE, "Content-Encoding": "gzip", "Content-Length": "8"}
    return httpx.Response(200, headers=headers, stream=httpx.ByteStream(b"not gzip"))


# Every exception an httpx transport raises. The wire server turns any of them into a
# reset connection (a closed one for RemoteProtocolError), so FAULTS has one of each
# kind for the sockets, and the exception classes themselves run on MockTransport.
TRANSPORT_EXCEPTIONS = [
    pytest.param(httpx.ConnectError("refused"), id="connect-error"),
    pytest.param(httpx.ConnectTimeout("connect timeout"), id="connect-timeout"),
    pytest.param(httpx.ReadTimeout("read timeout"), id="read-timeout"),
    pytest.param(httpx.WriteTimeout("write timeout"), id="write-timeout"),
    pytest.param(httpx.PoolTimeout("pool timeout"), id="pool-timeout"),
    pytest.param(httpx.ReadError("reset"), id="read-error"),
    pytest.param(httpx.WriteError("broken pipe"), id="write-error"),
    pytest.param(httpx.RemoteProtocolError("server hung up"), id="remote-protocol-error"),
    pytest.param(httpx.ProxyError("proxy said no"), id="proxy-error"),
]

FAULTS = [
    pytest.param(httpx.ReadError("reset"), id="connection-reset"),
    pytest.param(httpx.RemoteProtocolError("server hung up"), id="connection-closed"),
    pytest.param(_breaking, id="body-breaks-mid-way"),
    pytest.param(_redirect_loop, id="redirect-loop"),
    pytest.param(_undecodable_gzip, id="undecodable-gzip"),
    pytest.param(status(500, {"Content-Type": "text/html"}, b"<h1>oops</h1>"), id="500"),
    pytest.param(status(503, [(b"Retry-After", b"\xb2")]), id="503-non-ascii-retry-after"),
]

# A 200 whose body is unusable: a failure for every transaction that reads a body
# (a DELETE answered 200 has succeeded, whatever the body says).
BODY_FAULTS = [
    pytest.param(
        status(200, {"Content-Type": MULTIPART_TYPE}, b"--XX\r\nContent-Type: a/b\r\n\r\nab"),
        id="truncated-multipart",
    ),
    pytest.param(status(200, {"Content-Type": "text/html"}, b"<html>login</html>"), id="html"),
    pytest.param(status(200, {"Content-Type": DICOM_JSON}, b"[{"), id="broken-json"),
]
READING_OPERATIONS = [p for p in OPERATIONS if p.id != "delete"]


@pytest.mark.anyio
@pytest.mark.parametrize(("operation", "method", "path"), OPERATIONS)
@pytest.mark.parametrize("fault", FAULTS)
async def test_server_faults_surface_only_as_our_server_side_errors(
    operation: Operation,
    method: str,
    path: str,
    fault: Answer | Exception,
    tmp_path: Path,
    wire: Wire,
) -> None:
    server = Server(fault)
    async with wire.client(server, quick_policy()) as client:
        error = await failure_of(operation(client, tmp_path))
    assert_server_side(error)
    assert server.calls >= 1
    assert os.listdir(tmp_path) == []


# MockTransport: each httpx exception class raised inside the transport; a socket cannot
# make the client's transport raise a chosen one.
@pytest.mark.anyio
@pytest.mark.parametrize(("operation", "method", "path"), OPERATIONS)
@pytest.mark.parametrize("exception", TRANSPORT_EXCEPTIONS)
async def test_transport_exceptions_surface_only_as_our_server_side_errors(
    operation: Operation, method: str, path: str, exception: Exception, tmp_path: Path
) -> None:
    server = Server(exception)
    async with mock_client_for(server, quick_policy()) as client:
        error = await failure_of(operation(client, tmp_path))
    assert_server_side(error)
    assert server.calls >= 1
    assert os.listdir(tmp_path) == []


@pytest.mark.anyio
@pytest.mark.parametrize(("operation", "method", "path"), READING_OPERATIONS)
@pytest.mark.parametrize("fault", BODY_FAULTS)
async def test_unusable_bodies_surface_only_as_our_server_side_errors(
    operation: Operation, method: str, path: str, fault: Answer, tmp_path: Path, wire: Wire
) -> None:
    server = Server(fault)
    async with wire.client(server, quick_policy()) as client:
        error = await failure_of(operation(client, tmp_path))
    assert_server_side(error)
    assert os.listdir(tmp_path) == []


# MockTransport: the message under test is the one of the exception the transport raised.
@pytest.mark.anyio
async def test_transport_error_names_the_request_but_not_more() -> None:
    server = Server(httpx.ConnectError("connection refused"))
    async with mock_client_for(server) as client:
        with pytest.raises(DicomWebTransportError) as caught:
            await client.search_studies({"PatientID": "P1"})
    assert f"GET {BASE}/studies?PatientID=P1" in str(caught.value)
    assert "connection refused" in str(caught.value)


# -- credentials --------------------------------------------------------------------------


# `userinfo` goes into the served base URL (`http://user:password@host/...`).
CREDENTIALS = [
    pytest.param({"auth": ("user", PASSWORD)}, id="basic-tuple"),
    pytest.param({"userinfo": f"user:{PASSWORD}"}, id="basic-in-url"),
    pytest.param({"auth": BearerTokenAuth(TOKEN)}, id="bearer"),
]

# The wire server resets the connection for a ReadError and closes it for a
# RemoteProtocolError (see tests/support/wireserver.py).
SECRET_FAULTS = [
    pytest.param(status(401, content=b"unauthorized"), id="401"),
    pytest.param(status(500, content=b"internal error"), id="500"),
    pytest.param(httpx.ReadError("connection reset"), id="connection-reset"),
    pytest.param(httpx.RemoteProtocolError("server hung up"), id="connection-closed"),
    pytest.param(
        status(200, {"Content-Type": MULTIPART_TYPE}, b"--XX\r\n\r\ncut"), id="truncated"
    ),
]


def credentialed_client(
    wire: Wire, server: Server, retry: RetryPolicy | None, credentials: dict[str, Any]
) -> AsyncDicomWebClient:
    """A client on `wire` with one of the CREDENTIALS."""
    options = dict(credentials)
    userinfo = options.pop("userinfo", None)
    url = wire.url_with_userinfo(userinfo) if userinfo is not None else None
    return wire.client(server, retry, url=url, **options)


def _texts_of(error: BaseException) -> list[str]:
    texts: list[str] = []
    seen: BaseException | None = error
    while seen is not None:
        texts += [str(seen), repr(seen), repr(seen.args)]
        texts += [str(getattr(seen, name, "")) for name in ("url", "body_excerpt", "message")]
        seen = seen.__cause__ or seen.__context__
    return texts


def _assert_no_secret(texts: list[str]) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"secret leaked into: {text!r}"


@pytest.mark.anyio
@pytest.mark.parametrize("credentials", CREDENTIALS)
async def test_credentials_never_appear_in_the_client_repr(
    credentials: dict[str, Any], wire: Wire
) -> None:
    async with credentialed_client(wire, Server(status(200)), None, credentials) as client:
        _assert_no_secret([repr(client), str(client)])
        assert wire.url in repr(client)


def test_bearer_token_never_appears_in_the_auth_repr() -> None:
    auth = BearerTokenAuth(TOKEN, refresh=lambda: "other")
    assert TOKEN not in repr(auth)
    assert TOKEN not in str(auth)


@pytest.mark.anyio
@pytest.mark.parametrize("credentials", CREDENTIALS)
@pytest.mark.parametrize("fault", SECRET_FAULTS)
@pytest.mark.parametrize(
    "operation", [pytest.param(op_search, id="search"), pytest.param(op_stream, id="stream")]
)
async def test_credentials_never_appear_in_errors_or_our_logs(
    credentials: dict[str, Any],
    fault: Answer | Exception,
    operation: Operation,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    wire: Wire,
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiodicomweb")
    server = Server(fault)
    async with credentialed_client(wire, server, quick_policy(), credentials) as client:
        with pytest.raises(DicomWebError) as caught:
            await operation(client, tmp_path)
    _assert_no_secret(_texts_of(caught.value))
    ours = [r for r in caplog.records if r.name.startswith("aiodicomweb")]
    assert ours, "expected the client to log the request"
    _assert_no_secret([r.getMessage() for r in ours] + [str(r.exc_text or "") for r in ours])
    # The credentials were really sent: the test would catch a leak if there was one.
    sent = server.authorizations[0] or ""
    assert BASIC in sent or TOKEN in sent


@pytest.mark.anyio
async def test_credentials_in_the_url_never_reach_any_log_record(
    caplog: pytest.LogCaptureFixture, wire: Wire
) -> None:
    caplog.set_level(logging.DEBUG)
    server = Server(json_answer("[]"))
    async with wire.client(server, url=wire.url_with_userinfo(f"user:{PASSWORD}")) as client:
        assert await client.search_studies() == []
    assert server.authorizations == [f"Basic {BASIC}"]
    assert caplog.records
    _assert_no_secret([record.getMessage() for record in caplog.records])


# -- bearer token refresh ----------------------------------------------------------------


def _refresher(kind: str, tokens: list[str]) -> tuple[TokenSource, list[str]]:
    """A refresh callback (plain or async) handing out `tokens` in order."""
    handed: list[str] = []

    def plain() -> str:
        handed.append(tokens[len(handed)])
        return handed[-1]

    async def coroutine() -> str:
        await anyio.lowlevel.checkpoint()
        return plain()

    return (plain if kind == "sync" else coroutine), handed


def _authorized(*accepted: str) -> Answer:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") in {f"Bearer {t}" for t in accepted}:
            return httpx.Response(200, headers={"Content-Type": DICOM_JSON}, content=b"[]")
        return httpx.Response(401, content=b"token expired")

    return answer


REFRESH_KINDS = [
    pytest.param("sync", id="sync-refresh"),
    pytest.param("async", id="async-refresh"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", REFRESH_KINDS)
async def test_bearer_without_token_refreshes_before_the_first_request(
    kind: str, wire: Wire
) -> None:
    refresh, handed = _refresher(kind, ["tok-1"])
    server = Server(_authorized("tok-1"))
    async with wire.client(server, auth=BearerTokenAuth(refresh=refresh)) as client:
        assert await client.search_studies() == []
        assert await client.search_studies() == []
    assert handed == ["tok-1"]
    assert server.authorizations == ["Bearer tok-1"] * 2


@pytest.mark.anyio
@pytest.mark.parametrize("kind", REFRESH_KINDS)
async def test_bearer_401_refreshes_once_and_retries_with_the_new_token(
    kind: str, wire: Wire
) -> None:
    refresh, handed = _refresher(kind, ["new"])
    server = Server(_authorized("new"))
    auth = BearerTokenAuth("old", refresh=refresh)
    async with wire.client(server, auth=auth) as client:
        assert await client.search_studies() == []
        assert await client.search_studies() == []
    assert handed == ["new"]
    assert server.authorizations == ["Bearer old", "Bearer new", "Bearer new"]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", REFRESH_KINDS)
async def test_bearer_second_401_becomes_http_error(kind: str, wire: Wire) -> None:
    refresh, handed = _refresher(kind, ["new", "newer"])
    server = Server(_authorized())
    auth = BearerTokenAuth("old", refresh=refresh)
    async with wire.client(server, quick_policy(), auth=auth) as client:
        with pytest.raises(DicomWebHTTPError) as caught:
            await client.search_studies()
    assert caught.value.status == 401
    assert handed == ["new"]
    assert server.authorizations == ["Bearer old", "Bearer new"]


@pytest.mark.anyio
async def test_bearer_without_refresh_callback_does_not_retry_a_401(wire: Wire) -> None:
    server = Server(_authorized())
    async with wire.client(server, quick_policy(), auth=BearerTokenAuth("old")) as client:
        with pytest.raises(DicomWebHTTPError) as caught:
            await client.search_studies()
    assert caught.value.status == 401
    assert server.calls == 1


@pytest.mark.anyio
async def test_bearer_concurrent_401s_share_one_refresh(wire: Wire) -> None:
    refresh, handed = _refresher("async", ["new", "newer", "newest"])
    server = Server(_authorized("new"))
    auth = BearerTokenAuth("old", refresh=refresh)
    results: list[object] = []
    async with wire.client(server, auth=auth) as client:

        async def one() -> None:
            results.append(await client.search_studies())

        async with anyio.create_task_group() as group:
            for _ in range(5):
                group.start_soon(one)
    assert results == [[]] * 5
    assert handed == ["new"]


def test_bearer_needs_a_token_or_a_refresh_callback() -> None:
    with pytest.raises(ValueError):
        BearerTokenAuth()


# -- wrong answers to right questions --------------------------------------------------


@pytest.mark.anyio
async def test_retrieve_instance_answered_with_html_names_the_media_type(wire: Wire) -> None:
    server = Server(status(200, {"Content-Type": "text/html; charset=utf-8"}, b"<html>login"))
    async with wire.client(server, quick_policy()) as client:
        with pytest.raises(UnexpectedResponseError) as caught:
            await client.retrieve_instance(STUDY, SERIES, SOP)
    assert_server_side(caught.value)
    assert "text/html" in str(caught.value)
    assert server.calls == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(status(204), id="204"),
        pytest.param(status(200), id="empty-200-without-type"),
        pytest.param(status(200, {"Content-Type": DICOM_JSON}), id="empty-200-dicom-json"),
        pytest.param(status(200, {"Content-Type": DICOM_JSON}, b"  \r\n"), id="blank-200"),
        pytest.param(json_answer("[]"), id="empty-array"),
    ],
)
async def test_qido_no_results_is_an_empty_list(answer: Answer, wire: Wire) -> None:
    server = Server(answer)
    async with wire.client(server, quick_policy()) as client:
        assert await client.search_studies() == []
        assert await client.search_series(STUDY) == []
        assert await client.search_instances(STUDY, SERIES) == []
    assert server.calls == 3


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "named"),
    [
        pytest.param(json_answer('{"error": "no such study"}'), "array", id="object-not-dicom"),
        pytest.param(json_answer("[1, 2]"), "array", id="array-of-numbers"),
        pytest.param(json_answer('[{"a": 1}, "x"]'), "array", id="mixed-array"),
        pytest.param(json_answer("[{"), "not JSON", id="broken-json"),
        pytest.param(
            status(200, {"Content-Type": "text/html"}, b"<html>login</html>"),
            "text/html",
            id="html",
        ),
    ],
)
async def test_qido_unusable_answer_is_unexpected_response_error(
    answer: Answer, named: str, wire: Wire
) -> None:
    server = Server(answer)
    async with wire.client(server, quick_policy()) as client:
        with pytest.raises(UnexpectedResponseError) as caught:
            await client.search_studies()
    assert_server_side(caught.value)
    assert named in str(caught.value)
    assert server.calls == 1


@pytest.mark.anyio
async def test_metadata_with_empty_body_is_unexpected_response_error(wire: Wire) -> None:
    server = Server(status(200, {"Content-Type": DICOM_JSON}))
    async with wire.client(server) as client:
        with pytest.raises(UnexpectedResponseError):
            await client.retrieve_series_metadata(STUDY, SERIES)


# -- paging ------------------------------------------------------------------------------


def _dataset(number: int) -> dict[str, object]:
    return {"00080018": {"vr": "UI", "Value": [f"{SERIES}.{number}"]}}


class PagingServer(Server):
    """Serves `total` results honouring limit/offset, or one fixed page when `ignore_offset`."""

    def __init__(
        self,
        total: int,
        *,
        ignore_offset: bool = False,
        empty: Answer | None = None,
        cap: int | None = None,
    ):
        super().__init__(self.page)
        self.total = total
        self.ignore_offset = ignore_offset
        self.empty = empty
        self.cap = cap  # at most this many per answer, with a Warning when more remain
        self.offsets: list[int] = []
        self.limits: list[int] = []

    def page(self, request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params.get("offset", 0))
        limit = int(request.url.params.get("limit", self.total))
        self.offsets.append(offset)
        self.limits.append(limit)
        start = 0 if self.ignore_offset else offset
        numbers = range(start, min(start + limit, start + (self.cap or limit), self.total))
        if not numbers and self.empty is not None:
            return self.empty(request)
        headers = {"Content-Type": DICOM_JSON}
        if self.cap is not None and numbers and numbers[-1] + 1 < self.total:
            headers["Warning"] = '299 pacs.test "There are additional results to request"'
        body = json.dumps([_dataset(n) for n in numbers]).encode()
        return httpx.Response(200, headers=headers, content=body)


async def _pages(wire: Wire, server: Server, page_size: int) -> list[list[dict[str, object]]]:
    async with wire.client(server) as client:
        return [
            page async for page in client.search_pages("instances", STUDY, page_size=page_size)
        ]


@pytest.mark.anyio
async def test_search_pages_ends_on_an_empty_page_not_a_short_one(wire: Wire) -> None:
    server = PagingServer(5)
    pages = await _pages(wire, server, 2)
    assert pages == [[_dataset(0), _dataset(1)], [_dataset(2), _dataset(3)], [_dataset(4)]]
    assert server.offsets == [0, 2, 4, 5]
    assert server.limits == [2, 2, 2, 2]
    assert all(r.url.path == f"/dicom-web/studies/{STUDY}/instances" for r in server.requests)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "empty",
    [
        pytest.param(None, id="empty-array"),
        pytest.param(status(204), id="204"),
        pytest.param(status(200), id="empty-body"),
    ],
)
async def test_search_pages_stops_on_an_empty_page(empty: Answer | None, wire: Wire) -> None:
    server = PagingServer(4, empty=empty)
    pages = await _pages(wire, server, 2)
    assert pages == [[_dataset(0), _dataset(1)], [_dataset(2), _dataset(3)]]
    assert server.offsets == [0, 2, 4]


@pytest.mark.anyio
async def test_search_pages_stops_when_the_server_ignores_offset(
    caplog: pytest.LogCaptureFixture, wire: Wire
) -> None:
    caplog.set_level(logging.WARNING, logger="aiodicomweb")
    server = PagingServer(100, ignore_offset=True)
    pages = await _pages(wire, server, 3)
    assert pages == [[_dataset(0), _dataset(1), _dataset(2)]]
    assert server.offsets == [0, 3]
    assert any("offset" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_search_pages_walks_past_pages_a_server_caps_below_the_limit(wire: Wire) -> None:
    server = PagingServer(7, cap=2)
    pages = await _pages(wire, server, 5)
    assert [len(page) for page in pages] == [2, 2, 2, 1]
    assert [ds for page in pages for ds in page] == [_dataset(n) for n in range(7)]
    assert server.offsets == [0, 2, 4, 6, 7]


@pytest.mark.anyio
async def test_a_search_a_server_capped_with_a_warning_is_completed(wire: Wire) -> None:
    server = PagingServer(7, cap=3)
    async with wire.client(server) as client:
        everything = await client.search_instances(STUDY)
        first_five = await client.search_instances(STUDY, limit=5)
    assert everything == [_dataset(n) for n in range(7)]
    assert first_five == [_dataset(n) for n in range(5)]


@pytest.mark.anyio
async def test_a_capped_search_on_a_server_that_ignores_offset_says_it_stopped(
    caplog: pytest.LogCaptureFixture, wire: Wire
) -> None:
    caplog.set_level(logging.WARNING, logger="aiodicomweb")
    server = PagingServer(7, cap=3, ignore_offset=True)
    async with wire.client(server) as client:
        found = await client.search_instances(STUDY)
    assert found == [_dataset(n) for n in range(3)]
    assert any("stopped after 3 results" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_search_pages_with_no_results_yields_nothing(wire: Wire) -> None:
    server = PagingServer(0)
    assert await _pages(wire, server, 10) == []
    assert server.offsets == [0]


# -- asking for what the standard names, and tolerating servers that differ ----------------


@pytest.mark.anyio
async def test_a_dicom_json_object_where_an_array_belongs_is_read_as_one_dataset(
    caplog: pytest.LogCaptureFixture, wire: Wire
) -> None:
    caplog.set_level(logging.WARNING, logger="aiodicomweb")
    dataset = {"0020000D": {"vr": "UI", "Value": [STUDY]}}
    server = Server(json_answer(json.dumps(dataset)))
    async with wire.client(server) as client:
        assert await client.search_studies() == [dataset]
        assert await client.retrieve_study_metadata(STUDY) == [dataset]
    assert any("object where an array belongs" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_json_is_asked_as_dicom_json_and_the_wider_list_only_after_a_406(
    wire: Wire,
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["accept"] == DICOM_JSON:
            return httpx.Response(406)
        return httpx.Response(200, headers={"Content-Type": "application/json"}, content=b"[]")

    server = Server(answer)
    async with wire.client(server) as client:
        assert await client.search_studies() == []
        assert await client.search_series() == []
    accepts = [request.headers["accept"] for request in server.requests]
    assert accepts[0] == DICOM_JSON
    assert accepts[1] == accepts[2] != DICOM_JSON  # remembered: one refusal per client
    assert "application/json" in accepts[1]


@pytest.mark.anyio
async def test_a_server_that_takes_dicom_json_is_asked_nothing_else(wire: Wire) -> None:
    server = Server(json_answer("[]"))
    async with wire.client(server) as client:
        await client.search_studies()
        await client.search_series()
    assert [r.headers["accept"] for r in server.requests] == [DICOM_JSON, DICOM_JSON]


@pytest.mark.anyio
async def test_a_byte_range_a_server_ignored_is_cut_to_what_was_asked(wire: Wire) -> None:
    body = bytes(range(256)) * 4

    def whole(request: httpx.Request) -> httpx.Response:
        assert request.headers["range"] == "bytes=10-19"
        return httpx.Response(200, headers={"Content-Type": OCTET_STREAM}, content=body)

    async with wire.client(whole) as client:
        got = await client.retrieve_bulkdata("bulk/1", byte_range=(10, 19))
        assert got == [body[10:20]]


@pytest.mark.anyio
async def test_a_two_value_window_is_sent_with_the_linear_function(wire: Wire) -> None:
    server = Server(status(200, {"Content-Type": "image/jpeg"}, b"\xff\xd8jpeg"))
    async with wire.client(server) as client:
        await client.retrieve_rendered("1.2", "1.2.3", "1.2.3.4", window=(100.0, 50.0))
    assert server.requests[0].url.query == b"window=100.0,50.0,linear"


@pytest.mark.anyio
async def test_image_frames_ask_for_the_media_types_own_transfer_syntax(wire: Wire) -> None:
    frame = b"\xff\xd8jpeg frame"

    def jpeg(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            headers={"Content-Type": "multipart/related; type=image/jpeg; boundary=b"},
            content=b"--b\r\nContent-Type: image/jpeg\r\n\r\n" + frame + b"\r\n--b--\r\n",
        )

    server = Server(jpeg)
    async with wire.client(server) as client:
        got = await client.retrieve_frames("1.2", "1.2.3", "1.2.3.4", [1], media_type="image/jpeg")
        raw = await client.retrieve_frames("1.2", "1.2.3", "1.2.3.4", [1])
    assert got == [frame] and raw == [frame]
    jpeg_accept, raw_accept = (r.headers["accept"] for r in server.requests)
    assert "transfer-syntax" not in jpeg_accept and 'type="image/jpeg"' in jpeg_accept
    assert raw_accept.endswith("transfer-syntax=*")


# -- peer parity: vendor parameters, several media types, lenient single parts --------------


def _frames_answer(frame: bytes, content_type: str) -> Answer:
    return status(200, {"Content-Type": content_type}, frame)


@pytest.mark.anyio
async def test_additional_params_follow_the_standard_ones_on_every_transaction(
    wire: Wire,
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/rendered"):
            return httpx.Response(200, headers={"Content-Type": "image/jpeg"}, content=b"jpeg")
        if "/frames/" in path or "/bulk" in path:
            return httpx.Response(200, headers={"Content-Type": OCTET_STREAM}, content=b"px")
        if request.method == "DELETE":
            return httpx.Response(204)
        return httpx.Response(200, headers={"Content-Type": DICOM_JSON}, content=b"[]")

    server = Server(answer)
    extra = {"vendor": "x y", "tag": ["a", "b"]}
    async with wire.client(server) as client:
        await client.search_studies({"PatientID": "P1"}, limit=5, additional_params=extra)
        await client.retrieve_series_metadata(STUDY, SERIES, additional_params=extra)
        await client.retrieve_frames(STUDY, SERIES, SOP, [1], additional_params=extra)
        await client.retrieve_bulkdata("bulk/1", additional_params=extra)
        await client.retrieve_rendered(STUDY, SERIES, SOP, additional_params=extra)
        await client.delete_study(STUDY, additional_params=extra)
        with pytest.raises(DicomWebUsageError):
            await client.search_studies(additional_params={"a&b": "c"})
    queries = [r.url.query.decode() for r in server.requests]
    assert len(queries) == 6
    assert queries[0] == "PatientID=P1&limit=5&vendor=x%20y&tag=a&tag=b"
    assert all(q.endswith("vendor=x%20y&tag=a&tag=b") for q in queries)


@pytest.mark.anyio
async def test_frames_may_accept_several_media_types_and_any(wire: Wire) -> None:
    server = Server(_frames_answer(b"\xff\xd8jpeg", "image/jpeg"))
    async with wire.client(server) as client:
        several = await client.retrieve_frames(
            STUDY, SERIES, SOP, [1],
            media_type=["image/jpeg", ("application/octet-stream", "1.2.840.10008.1.2.1")],
        )  # fmt: skip
        anything = await client.retrieve_frames(STUDY, SERIES, SOP, [1], media_type="*/*")
    assert several == anything == [b"\xff\xd8jpeg"]  # a bare body of an accepted type
    first, second = (r.headers["accept"] for r in server.requests)
    assert first == (
        'multipart/related; type="image/jpeg", multipart/related; '
        'type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'
    )
    assert second == 'multipart/related; type="*/*"'


@pytest.mark.anyio
async def test_a_multipart_type_without_boundary_around_a_bare_frame_is_that_frame(
    caplog: pytest.LogCaptureFixture, wire: Wire
) -> None:
    caplog.set_level(logging.WARNING, logger="aiodicomweb")
    content_type = "multipart/related; type=application/octet-stream"
    server = Server(_frames_answer(b"\x00\x01raw pixels", content_type))
    async with wire.client(server) as client:
        assert await client.retrieve_frames(STUDY, SERIES, SOP, [1]) == [b"\x00\x01raw pixels"]
    assert any("without a boundary" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_multipart_framing_without_its_boundary_is_still_an_error(wire: Wire) -> None:
    content_type = "multipart/related; type=application/octet-stream"
    body = b"--abc\r\nContent-Type: application/octet-stream\r\n\r\npx\r\n--abc--\r\n"
    server = Server(_frames_answer(body, content_type))
    async with wire.client(server) as client:
        with pytest.raises(MultipartError, match="without a boundary"):
            await client.retrieve_frames(STUDY, SERIES, SOP, [1])


@pytest.mark.anyio
async def test_rendered_frames_and_the_type_the_server_actually_sent(
    caplog: pytest.LogCaptureFixture, wire: Wire
) -> None:
    caplog.set_level(logging.WARNING, logger="aiodicomweb")
    server = Server(status(200, {"Content-Type": "image/png"}, b"\x89PNG"))
    async with wire.client(server) as client:
        image = await client.retrieve_rendered(STUDY, SERIES, SOP, frame=[1, 2, 3])
    assert image == b"\x89PNG" and image.media_type == "image/png"
    assert server.requests[0].url.path.endswith(f"/instances/{SOP}/frames/1,2,3/rendered")
    assert any("asked for image/jpeg, got image/png" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_frames_and_bulk_data_stream_as_parts(wire: Wire) -> None:
    body = b"--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b--\r\n"
    multipart = f"multipart/related; type={OCTET_STREAM}; boundary=b"
    server = Server(status(200, {"Content-Type": multipart}, body))
    async with wire.client(server) as client:
        async with client.stream_frames(STUDY, SERIES, SOP, [1, 2]) as parts:
            frames = [await part.read() async for part in parts]
        async with client.stream_bulkdata("bulk/1") as parts:
            bulk = [await part.read() async for part in parts]
        with pytest.raises(UnexpectedResponseError, match="ignored the byte range"):
            async with client.stream_bulkdata("bulk/1", byte_range=(0, 1)):
                pass
    assert frames == bulk == [b"one", b"two"]


@pytest.mark.anyio
async def test_search_pages_may_start_at_an_offset(wire: Wire) -> None:
    server = PagingServer(5)
    async with wire.client(server) as client:
        pages = [page async for page in client.search_pages("instances", STUDY, page_size=2,
                                                            offset=3)]  # fmt: skip
    assert pages == [[_dataset(3), _dataset(4)]]
    assert server.offsets == [3, 5]
