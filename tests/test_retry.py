"""Tests of the retry policy: pure decisions first, then through the real client.

Client tests script their servers as MockTransport handlers and take the `wire`
fixture (tests/support/matrix.py), which serves them over real sockets on each
production path (plain http, https, httpx's transport). The policy's `sleep` is a
recorder, so attempts and waits are counted and nothing ever really sleeps.
"""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
import os
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from aiodicomweb import (
    AsyncDicomWebClient,
    DicomWebHTTPError,
    DicomWebTimeoutError,
    DicomWebTransportError,
    DicomWebUsageError,
    MultipartError,
    RetryPolicy,
    UnexpectedResponseError,
)
from aiodicomweb._retry import parse_retry_after
from tests.support.matrix import Wire, parametrize_wire

BASE = "http://pacs.test/dicom-web"
STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.1.1"
BOUNDARY = "XX"
MULTIPART_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
TRUNCATED = b"--XX\r\nContent-Type: application/dicom\r\n\r\nabc"
NOW = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)

Answer = Callable[[httpx.Request], httpx.Response]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_wire(metafunc)  # tests on the wire: the matrix's backend and path pairs


# -- helpers -----------------------------------------------------------------------


class Server:
    """A scripted handler: the answers in order, the last one repeated.

    An answer is a callable building a fresh response, or an exception to raise.
    """

    def __init__(self, *answers: Answer | Exception) -> None:
        self.answers = answers
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer(request)

    @property
    def calls(self) -> int:
        return len(self.requests)


def status(code: int, headers: dict[str, str] | None = None, content: bytes = b"") -> Answer:
    return lambda request: httpx.Response(code, headers=headers, content=content)


def json_answer(text: str = "[]") -> Answer:
    return status(200, {"Content-Type": "application/dicom+json"}, text.encode())


def multipart_body(*payloads: bytes, close: bool = True) -> bytes:
    body = b"".join(
        b"--XX\r\nContent-Type: application/dicom\r\n\r\n" + payload + b"\r\n"
        for payload in payloads
    )
    return body + (b"--XX--\r\n" if close else b"")


def multipart(*payloads: bytes) -> Answer:
    return status(200, {"Content-Type": MULTIPART_TYPE}, multipart_body(*payloads))


def truncated() -> Answer:
    return status(200, {"Content-Type": MULTIPART_TYPE}, TRUNCATED)


class BreakingStream(httpx.AsyncByteStream):
    """A body that sends `head`, then the connection breaks."""

    def __init__(self, head: bytes) -> None:
        self.head = head

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.head
        raise httpx.ReadError("connection reset by peer")


def recording_policy(**options: object) -> tuple[RetryPolicy, list[float]]:
    """A policy without jitter whose sleeps are recorded, never taken."""
    waits: list[float] = []

    async def recorder(seconds: float) -> None:
        waits.append(seconds)

    options.setdefault("jitter", 0)
    return RetryPolicy(sleep=recorder, **options), waits  # type: ignore[arg-type]


def mock_client_for(server: Server, retry: RetryPolicy | None) -> AsyncDicomWebClient:
    """A client on MockTransport, for what a socket cannot show."""
    return AsyncDicomWebClient(BASE, transport=httpx.MockTransport(server), retry=retry)


# -- RetryPolicy values --------------------------------------------------------------


def test_retry_policy_defaults_match_the_documented_ones() -> None:
    policy = RetryPolicy()
    assert policy.max_attempts == 5
    assert policy.backoff_multiplier == 1.0
    assert policy.retry_statuses == frozenset({429, 408, 503, 504})
    assert policy.retry_transport_errors is True
    assert policy.max_retry_after > 0
    assert policy.sleep is None


def test_retry_policy_is_a_frozen_value_object() -> None:
    policy = RetryPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_attempts = 2  # type: ignore[misc]
    assert RetryPolicy(max_attempts=3) == RetryPolicy(max_attempts=3)
    assert RetryPolicy(retry_statuses=[503]).retry_statuses == frozenset({503})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"max_attempts": 0}, id="zero-attempts"),
        pytest.param({"backoff_multiplier": -1}, id="negative-multiplier"),
        pytest.param({"backoff_max": -1}, id="negative-max"),
        pytest.param({"jitter": -0.1}, id="negative-jitter"),
        pytest.param({"max_retry_after": -1}, id="negative-retry-after-cap"),
    ],
)
def test_retry_policy_refuses_invalid_settings(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**options)  # type: ignore[arg-type]


def _http_error(code: int) -> DicomWebHTTPError:
    return DicomWebHTTPError("x", status=code, method="GET", url=BASE)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(_http_error(429), True, id="429"),
        pytest.param(_http_error(408), True, id="408"),
        pytest.param(_http_error(503), True, id="503"),
        pytest.param(_http_error(504), True, id="504"),
        pytest.param(_http_error(400), False, id="400"),
        pytest.param(_http_error(401), False, id="401"),
        pytest.param(_http_error(403), False, id="403"),
        pytest.param(_http_error(404), False, id="404"),
        pytest.param(_http_error(500), False, id="500"),
        pytest.param(DicomWebTransportError("reset"), True, id="transport"),
        pytest.param(DicomWebTimeoutError("slow"), True, id="timeout"),
        pytest.param(MultipartError("cut", offset=3), True, id="truncated-body"),
        pytest.param(UnexpectedResponseError("html"), False, id="wrong-media-type"),
        pytest.param(DicomWebUsageError("bad uid"), False, id="usage"),
        pytest.param(ValueError("bug"), False, id="plain-value-error"),
        pytest.param(OSError("disk full"), False, id="local-os-error"),
    ],
)
def test_should_retry_decides_by_error_kind(error: BaseException, expected: bool) -> None:
    assert RetryPolicy().should_retry(error) is expected


def test_should_retry_transport_errors_can_be_switched_off() -> None:
    policy = RetryPolicy(retry_transport_errors=False)
    assert not policy.should_retry(DicomWebTransportError("reset"))
    assert not policy.should_retry(MultipartError("cut", offset=0))
    assert policy.should_retry(_http_error(503))


@pytest.mark.parametrize(
    ("failed", "expected"),
    [
        pytest.param(1, 1.0, id="1"),
        pytest.param(2, 2.0, id="2"),
        pytest.param(3, 4.0, id="3"),
        pytest.param(4, 8.0, id="4"),
        pytest.param(5, 16.0, id="5"),
        pytest.param(6, 30.0, id="6-capped"),
        pytest.param(20, 30.0, id="20-capped"),
        pytest.param(1024, 30.0, id="1024-capped"),
        pytest.param(1025, 30.0, id="1025-capped-no-overflow"),
        pytest.param(10_000, 30.0, id="10000-capped-no-overflow"),
    ],
)
def test_wait_grows_exponentially_and_is_capped(failed: int, expected: float) -> None:
    policy = RetryPolicy(jitter=0, backoff_max=30)
    assert policy.wait(failed) == expected


def test_wait_scales_with_the_multiplier() -> None:
    policy = RetryPolicy(jitter=0, backoff_multiplier=0.25, backoff_max=1.5)
    assert [policy.wait(n) for n in range(1, 6)] == [0.25, 0.5, 1.0, 1.5, 1.5]


def test_jitter_stays_within_its_bounds_and_varies() -> None:
    policy = RetryPolicy(jitter=0.5)
    samples = [policy.wait(3) for _ in range(500)]
    assert all(4.0 <= s <= 4.5 for s in samples)
    assert max(samples) - min(samples) > 0.1


def test_jitter_is_drawn_between_zero_and_the_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[float, float]] = []

    def highest(low: float, high: float) -> float:
        asked.append((low, high))
        return high

    monkeypatch.setattr(random, "uniform", highest)
    assert RetryPolicy(jitter=0.75).wait(2) == 2.75
    assert asked == [(0, 0.75)]


def test_zero_jitter_is_deterministic() -> None:
    policy = RetryPolicy(jitter=0)
    assert {policy.wait(4) for _ in range(50)} == {8.0}


@pytest.mark.parametrize(
    ("failed", "retry_after", "expected"),
    [
        pytest.param(1, 2.0, 2.0, id="longer-than-backoff"),
        pytest.param(4, 1.0, 1.0, id="shorter-than-backoff"),
        pytest.param(1, 0.0, 0.0, id="zero"),
        pytest.param(1, -5.0, 0.0, id="negative-is-zero"),
        pytest.param(1, 119.0, 119.0, id="just-under-cap"),
        pytest.param(1, 100_000.0, 120.0, id="capped"),
        pytest.param(1, float("inf"), 120.0, id="infinite-capped"),
    ],
)
def test_retry_after_is_honoured_exactly_and_capped(
    failed: int, retry_after: float, expected: float
) -> None:
    # The default jitter (0.5 s) must not be added to the server's wish.
    assert RetryPolicy().wait(failed, retry_after) == expected


def test_retry_after_cap_is_configurable() -> None:
    assert RetryPolicy(max_retry_after=5).wait(1, 60) == 5


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("120", 120.0, id="delta-seconds"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param(" 7 ", 7.0, id="spaces"),
        pytest.param("Wed, 01 May 2024 12:00:30 GMT", 30.0, id="imf-fixdate"),
        pytest.param("Wednesday, 01-May-24 12:01:00 GMT", 60.0, id="rfc850-date"),
        pytest.param("Wed May  1 12:00:05 2024", 5.0, id="asctime-date"),
        pytest.param("Wed, 01 May 2024 11:00:00 GMT", 0.0, id="date-in-the-past"),
        pytest.param("Wed, 01 May 2024 12:00:00 GMT", 0.0, id="date-now"),
    ],
)
def test_parse_retry_after_reads_seconds_and_http_dates(value: str, expected: float) -> None:
    assert parse_retry_after(value, now=NOW) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="absent"),
        pytest.param("", id="empty"),
        pytest.param("soon", id="word"),
        pytest.param("-5", id="negative"),
        pytest.param("1.5", id="fraction"),
        pytest.param("5s", id="unit"),
        pytest.param("Wed, 99 Foo 2024 99:99:99 GMT", id="bad-date"),
        pytest.param("\u00b2", id="superscript-two"),
        pytest.param("\u00b9\u00b2", id="superscripts"),
    ],
)
def test_parse_retry_after_invalid_values_are_none(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None


def test_parse_retry_after_uses_the_clock_when_now_is_not_given() -> None:
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=100)
    seconds = parse_retry_after(email.utils.format_datetime(later, usegmt=True))
    assert seconds is not None
    assert 97 <= seconds <= 100


# -- through the client: buffered requests ----------------------------------------------


@pytest.mark.anyio
async def test_503_with_retry_after_then_200_succeeds_after_two_attempts(wire: Wire) -> None:
    server = Server(status(503, {"Retry-After": "2"}), json_answer('[{"00100020": {}}]'))
    policy, waits = recording_policy()
    async with wire.client(server, policy) as client:
        found = await client.search_studies()
    assert found == [{"00100020": {}}]
    assert server.calls == 2
    assert waits == [2.0]


@pytest.mark.anyio
async def test_retry_after_as_http_date_is_honoured(wire: Wire) -> None:
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=30)
    header = email.utils.format_datetime(later, usegmt=True)
    server = Server(status(503, {"Retry-After": header}), json_answer())
    policy, waits = recording_policy()
    async with wire.client(server, policy) as client:
        assert await client.search_studies() == []
    assert server.calls == 2
    assert len(waits) == 1
    assert 27.0 <= waits[0] <= 30.0


@pytest.mark.anyio
async def test_retry_after_date_in_the_past_retries_at_once(wire: Wire) -> None:
    server = Server(status(503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), json_answer())
    policy, waits = recording_policy()
    async with wire.client(server, policy) as client:
        assert await client.search_studies() == []
    assert waits == [0.0]


@pytest.mark.anyio
async def test_429_storm_gives_up_after_exactly_max_attempts_with_bounded_waits(
    wire: Wire,
) -> None:
    server = Server(status(429, {"Retry-After": "86400"}, b"slow down"))
    policy, waits = recording_policy(max_attempts=5, max_retry_after=7)
    async with wire.client(server, policy) as client:
        with pytest.raises(DicomWebHTTPError) as caught:
            await client.search_studies()
    assert caught.value.status == 429
    assert caught.value.retry_after == 86400
    assert server.calls == policy.max_attempts
    assert len(waits) == policy.max_attempts - 1
    assert sum(waits) <= (policy.max_attempts - 1) * policy.max_retry_after
    assert waits == [7.0] * 4


@pytest.mark.anyio
async def test_429_without_retry_after_backs_off_exponentially(wire: Wire) -> None:
    server = Server(status(429))
    policy, waits = recording_policy(max_attempts=5)
    async with wire.client(server, policy) as client:
        with pytest.raises(DicomWebHTTPError):
            await client.search_studies()
    assert server.calls == 5
    assert waits == [1.0, 2.0, 4.0, 8.0]


@pytest.mark.anyio
@pytest.mark.parametrize("code", [408, 429, 503, 504])
async def test_each_retryable_status_is_retried(code: int, wire: Wire) -> None:
    server = Server(status(code), json_answer())
    policy, waits = recording_policy()
    async with wire.client(server, policy) as client:
        assert await client.search_studies() == []
    assert server.calls == 2
    assert waits == [1.0]


@pytest.mark.anyio
@pytest.mark.parametrize("code", [400, 401, 403, 404, 405, 409, 500])
async def test_other_error_statuses_are_never_retried(code: int, wire: Wire) -> None:
    server = Server(status(code, content=b"no"))
    policy, waits = recording_policy()
    async with wire.client(server, policy) as client:
        with pytest.raises(DicomWebHTTPError) as caught:
            await client.search_studies()
    assert caught.value.status == code
    assert server.calls == 1
    assert waits == []


@pytest.mark.anyio
async def test_connection_errors_are_retried_then_become_transport_errors(wire: Wire) -> None:
    server = Server(httpx.ConnectError("connection refused"))
    policy, waits = recording_policy(max_attempts=4)
    async with wire.client(server, policy) as client:
        with pytest.raises(DicomWebTransportError) as caught:
            await client.search_studies()
    assert isinstance(caught.value, ConnectionError)
    assert not isinstance(caught.value, DicomWebTimeoutError)
    assert server.calls == 4
    assert waits == [1.0, 2.0, 4.0]


@pytest.mark.anyio
async def test_connection_error_then_success_recovers(wire: Wire) -> None:
    server = Server(httpx.ConnectError("refused"), httpx.RemoteProtocolError("eof"), json_answer())
    policy, waits = recording_policy()
    async with wire.client(server, policy) as client:
        assert await client.search_studies() == []
    assert server.calls == 3
    assert waits == [1.0, 2.0]


# MockTransport: the timeout is raised inside the transport; a socket gives a reset,
# not a timeout (test_faults.py stalls a real socket instead).
@pytest.mark.anyio
async def test_read_timeout_becomes_timeout_error_after_retries() -> None:
    server = Server(httpx.ReadTimeout("read timed out"))
    policy, waits = recording_policy(max_attempts=3)
    async with mock_client_for(server, policy) as client:
        with pytest.raises(DicomWebTimeoutError) as caught:
            await client.search_studies()
    assert isinstance(caught.value, TimeoutError)
    assert isinstance(caught.value, ConnectionError)
    assert isinstance(caught.value, DicomWebTransportError)
    assert server.calls == 3
    assert waits == [1.0, 2.0]


@pytest.mark.anyio
async def test_transport_errors_not_retried_when_switched_off(wire: Wire) -> None:
    server = Server(httpx.ConnectError("refused"))
    policy, waits = recording_policy(retry_transport_errors=False)
    async with wire.client(server, policy) as client:
        with pytest.raises(DicomWebTransportError):
            await client.search_studies()
    assert server.calls == 1
    assert waits == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(status(503, {"Retry-After": "1"}), id="503"),
        pytest.param(httpx.ConnectError("refused"), id="connect-error"),
    ],
)
async def test_retry_none_makes_exactly_one_attempt(
    answer: Answer | Exception, wire: Wire
) -> None:
    server = Server(answer, json_answer())
    async with wire.client(server, None) as client:
        with pytest.raises((DicomWebHTTPError, DicomWebTransportError)):
            await client.search_studies()
    assert server.calls == 1


@pytest.mark.anyio
async def test_max_attempts_one_makes_exactly_one_attempt(wire: Wire) -> None:
    server = Server(status(503), json_answer())
    policy, waits = recording_policy(max_attempts=1)
    async with wire.client(server, policy) as client:
        with pytest.raises(DicomWebHTTPError):
            await client.search_studies()
    assert server.calls == 1
    assert waits == []


@pytest.mark.anyio
async def test_retry_can_be_replaced_on_a_live_client(wire: Wire) -> None:
    server = Server(status(503), json_answer())
    policy, _ = recording_policy()
    async with wire.client(server, policy) as client:
        client.retry = None
        with pytest.raises(DicomWebHTTPError):
            await client.search_studies()
    assert server.calls == 1


@pytest.mark.anyio
async def test_store_retry_sends_the_whole_body_again(wire: Wire) -> None:
    server = Server(status(503), status(200))
    policy, waits = recording_policy()
    payload = b"DICM-like payload " * 100
    async with wire.client(server, policy) as client:
        await client.store([payload])
    assert server.calls == 2
    bodies = [request.content for request in server.requests]
    assert bodies[0] == bodies[1]
    assert payload in bodies[1]
    assert waits == [1.0]


# -- through the client: streams ------------------------------------------------------


@pytest.mark.anyio
async def test_stream_series_503_on_open_is_retried_as_a_whole(wire: Wire) -> None:
    server = Server(status(503), multipart(b"first", b"second"))
    policy, waits = recording_policy()
    async with wire.client(server, policy) as client:
        async with client.stream_series(STUDY, SERIES) as parts:
            bodies = [await part.read() async for part in parts]
    assert bodies == [b"first", b"second"]
    assert server.calls == 2
    assert waits == [1.0]
    assert all(r.url.path.endswith(f"/studies/{STUDY}/series/{SERIES}") for r in server.requests)


@pytest.mark.anyio
async def test_stream_series_gives_up_on_open_after_max_attempts(wire: Wire) -> None:
    server = Server(status(503))
    policy, waits = recording_policy(max_attempts=3)
    async with wire.client(server, policy) as client:
        with pytest.raises(DicomWebHTTPError) as caught:
            async with client.stream_series(STUDY, SERIES):
                pytest.fail("the stream must not open")
    assert caught.value.status == 503
    assert server.calls == 3
    assert waits == [1.0, 2.0]


@pytest.mark.anyio
async def test_truncated_stream_raises_multipart_error_from_iteration(wire: Wire) -> None:
    server = Server(truncated(), multipart(b"never asked"))
    policy, waits = recording_policy()
    opened = False
    async with wire.client(server, policy) as client:
        with pytest.raises(MultipartError) as caught:
            async with client.stream_series(STUDY, SERIES) as parts:
                opened = True
                async for part in parts:
                    await part.read()
    assert opened
    assert isinstance(caught.value, ConnectionError)
    assert caught.value.offset > 0
    # The middle of a stream is never retried by the stream itself.
    assert server.calls == 1
    assert waits == []


@pytest.mark.anyio
async def test_stream_broken_by_the_network_raises_transport_error_from_iteration(
    wire: Wire,
) -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        head = b"--XX\r\nContent-Type: application/dicom\r\n\r\n0123456789"
        return httpx.Response(
            200, headers={"Content-Type": MULTIPART_TYPE}, stream=BreakingStream(head)
        )

    server = Server(broken)
    policy, waits = recording_policy()
    async with wire.client(server, policy) as client:
        with pytest.raises(DicomWebTransportError):
            async with client.stream_series(STUDY, SERIES) as parts:
                async for part in parts:
                    await part.read()
    assert server.calls == 1
    assert waits == []


# -- through the client: downloads ----------------------------------------------------


@pytest.mark.anyio
async def test_download_series_retries_a_truncated_series_as_a_whole(
    tmp_path: Path, wire: Wire
) -> None:
    server = Server(truncated(), multipart(b"instance-0", b"instance-1"))
    policy, waits = recording_policy()
    dest = tmp_path / "series"
    async with wire.client(server, policy) as client:
        result = await client.download_series(STUDY, SERIES, dest)
    assert server.calls == 2
    assert waits == [1.0]
    assert os.listdir(tmp_path) == ["series"]
    assert sorted(os.listdir(dest)) == ["file000000.dcm", "file000001.dcm"]
    assert (dest / "file000000.dcm").read_bytes() == b"instance-0"
    assert (dest / "file000001.dcm").read_bytes() == b"instance-1"
    assert result.instances == 2


@pytest.mark.anyio
async def test_download_series_always_truncated_leaves_nothing_behind(
    tmp_path: Path, wire: Wire
) -> None:
    server = Server(truncated())
    policy, waits = recording_policy(max_attempts=3)
    dest = tmp_path / "series"
    async with wire.client(server, policy) as client:
        with pytest.raises(MultipartError) as caught:
            await client.download_series(STUDY, SERIES, dest)
    assert isinstance(caught.value, ConnectionError)
    assert server.calls == 3
    assert waits == [1.0, 2.0]
    assert os.listdir(tmp_path) == []


@pytest.mark.anyio
async def test_download_series_with_retry_none_tries_once(tmp_path: Path, wire: Wire) -> None:
    server = Server(truncated(), multipart(b"never asked"))
    async with wire.client(server, None) as client:
        with pytest.raises(MultipartError):
            await client.download_series(STUDY, SERIES, tmp_path / "series")
    assert server.calls == 1
    assert os.listdir(tmp_path) == []


@pytest.mark.anyio
async def test_download_series_per_instance_retries_one_instance(
    tmp_path: Path, wire: Wire
) -> None:
    sop = f"{SERIES}.7"
    qido = json_answer(f'[{{"00080018": {{"vr": "UI", "Value": ["{sop}"]}}}}]')
    attempts: list[str] = []

    def routed(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/instances"):
            return qido(request)
        attempts.append(request.url.path)
        answer = truncated() if len(attempts) == 1 else multipart(b"the instance")
        return answer(request)

    server = Server(routed)
    policy, waits = recording_policy()
    dest = tmp_path / "series"
    async with wire.client(server, policy) as client:
        await client.download_series(STUDY, SERIES, dest, strategy="per_instance")
    assert len(attempts) == 2
    assert all(path.endswith(f"/instances/{sop}") for path in attempts)
    assert waits == [1.0]
    assert (dest / "file000000.dcm").read_bytes() == b"the instance"
    assert os.listdir(tmp_path) == ["series"]
