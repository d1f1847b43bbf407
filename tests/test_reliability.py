"""Reliability against hostile values and servers: secrets in headers, inflated answers.

Socket tests run on every production path (the `wire` fixture: plain http and https
fast paths, httpx's transport).
"""

from __future__ import annotations

import errno
import functools
import gzip
import json
import logging
import os
import random
import struct
import subprocess
import sys
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from aiodicomweb import (
    AsyncDicomWebClient,
    BearerTokenAuth,
    DicomWebHTTPError,
    DicomWebTimeoutError,
    DicomWebUsageError,
    MultipartError,
    RetryPolicy,
    UnexpectedResponseError,
)
from tests.support.matrix import Wire

pytestmark = pytest.mark.anyio

SECRET = "s3cret-T0ken-value"
EMPTY_SEARCH = httpx.Response(200, json=[])


@pytest.fixture
def anyio_backend() -> str:
    """Hostile values and servers: asyncio only, not conftest's asyncio and trio."""
    return "asyncio"


def chain(error: BaseException) -> list[BaseException]:
    """The error and every exception it was raised from or while handling."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def assert_secret_nowhere(error: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    for link in chain(error):
        assert SECRET not in str(link) and SECRET not in repr(link)
    assert SECRET not in caplog.text


# -- 1. secrets in header values -------------------------------------------------------


@pytest.mark.parametrize(
    "value", [f"{SECRET}\n", f"{SECRET}\r\nX-Forged: 1", f" {SECRET}", f"{SECRET}\x00"]
)
def test_a_header_value_that_cannot_be_sent_is_refused_naming_only_the_header(
    value: str,
) -> None:
    with pytest.raises(DicomWebUsageError, match="X-Api-Key") as refused:
        AsyncDicomWebClient("https://pacs.test/dicom-web", headers={"X-Api-Key": value})
    assert SECRET not in str(refused.value)
    with pytest.raises(ValueError, match="Authorization") as refused:
        BearerTokenAuth(value)
    assert SECRET not in str(refused.value)


def test_a_header_name_that_is_not_a_token_is_refused() -> None:
    with pytest.raises(DicomWebUsageError, match="header name"):
        AsyncDicomWebClient("https://pacs.test/dicom-web", headers={"X Api": "1"})


async def test_a_refreshed_token_with_a_newline_never_reaches_an_error_or_a_log(
    wire: Wire, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore included
    auth = BearerTokenAuth(refresh=lambda: f"{SECRET}\n")
    async with wire.client(lambda request: EMPTY_SEARCH, auth=auth) as client:
        for call in (client.search_studies, lambda: client.store([b"DICM"])):
            with pytest.raises(DicomWebUsageError, match="Authorization") as refused:
                await call()
            assert_secret_nowhere(refused.value, caplog)


def test_the_cli_refuses_a_token_with_a_newline_without_showing_it() -> None:
    env = dict(
        os.environ, DICOMWEB_URL="http://127.0.0.1:9/dicom-web", DICOMWEB_TOKEN=SECRET + "\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "aiodicomweb", "search", "studies"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "Authorization" in done.stderr
    assert SECRET not in done.stdout + done.stderr


# -- 4. compression bombs on buffered answers ------------------------------------------


class Chunks(httpx.AsyncByteStream):
    """A body sent as it is (the server must not inflate what it serves)."""

    def __init__(self, data: bytes, size: int = 65536) -> None:
        self.data, self.size = data, size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.data), self.size):
            yield self.data[start : start + self.size]


@functools.cache
def bomb() -> bytes:
    """256 MiB of zeros, gzipped to about 256 KiB (1000:1)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    piece = bytes(1 << 20)
    return b"".join(packer.compress(piece) for _ in range(256)) + packer.flush()


def gzipped(status: int, body: bytes, content_type: str = "application/dicom+json") -> Any:
    headers = {"Content-Type": content_type, "Content-Encoding": "gzip"}
    return lambda request: httpx.Response(status, headers=headers, stream=Chunks(body))


def peak_growth(run: Any) -> Any:
    async def measured() -> tuple[Any, int]:
        tracemalloc.start()
        try:
            outcome = await run()
            return outcome, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    return measured()


@pytest.mark.parametrize("status", [200, 500])
async def test_a_compression_bomb_is_refused_in_bounded_memory(wire: Wire, status: int) -> None:
    async def search() -> BaseException:
        async with wire.client(gzipped(status, bomb())) as client:
            with pytest.raises((UnexpectedResponseError, DicomWebHTTPError)) as caught:
                await client.search_studies()
        return caught.value

    error, peak = await peak_growth(search)
    assert len(bomb()) < 1 << 20
    assert peak < 64 << 20
    if status == 200:
        assert isinstance(error, UnexpectedResponseError)
        assert "max_expansion_ratio" in str(error)
    else:  # the error body is read only as far as its excerpt
        assert isinstance(error, DicomWebHTTPError) and error.status == 500


def metadata(size: int) -> bytes:
    """DICOM JSON of about `size` bytes, compressing about as real metadata does."""
    rng = random.Random(7)
    items: list[str] = []
    total = 0
    while total < size:
        uid = "1.2.826.0.1.3680043.8.498." + ".".join(str(rng.randrange(10**9)) for _ in range(3))
        items.append(json.dumps({
            "00080018": {"vr": "UI", "Value": [uid]},
            "00200013": {"vr": "IS", "Value": [rng.randrange(5000)]},
            "00280030": {"vr": "DS", "Value": [rng.random(), rng.random()]},
            "00081030": {"vr": "LO", "Value": ["Synthetic study " * 4]},
        }))  # fmt: skip
        total += len(items[-1])
    return ("[" + ",".join(items) + "]").encode()


async def test_a_large_legitimate_compressed_answer_is_read(wire: Wire) -> None:
    body = metadata(24 << 20)
    packed = gzip.compress(body, compresslevel=6)
    assert 5 < len(body) / len(packed) < 60  # as real DICOM JSON
    async with wire.client(gzipped(200, packed)) as client:
        found = await client.retrieve_series_metadata("1.2", "1.2.3")
    assert len(found) == body.count(b'"00080018"')
    async with wire.client(gzipped(200, packed), max_decoded_size=1 << 20) as client:
        with pytest.raises(UnexpectedResponseError, match="max_decoded_size"):
            await client.retrieve_series_metadata("1.2", "1.2.3")


# -- 7, 10, 11: what a hostile server's bytes become ----------------------------------

BOUNDARY = "reliability-boundary"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def multipart(*bodies: bytes, closed: bool = True) -> bytes:
    parts = [
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + body + b"\r\n"
        for body in bodies
    ]
    return b"".join(parts) + (f"--{BOUNDARY}--\r\n".encode() if closed else b"")


def unreadable_instance() -> bytes:
    """DICM, a Deflated transfer syntax, and bytes that do not inflate (zlib.error)."""

    def element(group: int, number: int, vr: bytes, value: bytes) -> bytes:
        return struct.pack("<HH", group, number) + vr + struct.pack("<H", len(value)) + value

    meta = element(2, 0x10, b"UI", b"1.2.840.10008.1.2.1.99\0")
    meta = element(2, 0, b"UL", struct.pack("<I", len(meta))) + meta
    return b"\0" * 128 + b"DICM" + meta + b"not deflate data " * 8


async def no_sleep(seconds: float) -> None:
    pass


async def test_unreadable_bytes_kept_before_a_break_are_a_server_side_error(
    wire: Wire, tmp_path: Path
) -> None:
    body = multipart(unreadable_instance(), b"second", closed=False)  # cut short
    answer = httpx.Response(200, headers={"Content-Type": MULTIPART}, content=body)
    retry = RetryPolicy(max_attempts=2, jitter=0, sleep=no_sleep)
    async with wire.client(lambda request: answer, retry) as client:
        with pytest.raises(UnexpectedResponseError, match="SOPInstanceUID") as caught:
            await client.download_series("1.2", "1.2.3", tmp_path / "out")
    assert isinstance(caught.value, ConnectionError)  # the adapter's documented except
    assert list(tmp_path.iterdir()) == []


async def test_empty_parts_are_not_instances(wire: Wire, tmp_path: Path) -> None:
    answer = httpx.Response(
        200, headers={"Content-Type": MULTIPART}, content=multipart(*[b""] * 2000)
    )
    async with wire.client(lambda request: answer) as client:
        with pytest.raises(MultipartError, match="no body"):
            await client.download_series("1.2", "1.2.3", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


async def test_the_number_of_parts_in_an_answer_is_capped(wire: Wire, tmp_path: Path) -> None:
    answer = httpx.Response(
        200, headers={"Content-Type": MULTIPART}, content=multipart(*[b"x"] * 50)
    )
    async with wire.client(lambda request: answer, max_parts=20) as client:
        with pytest.raises(MultipartError, match="more than 20 parts"):
            await client.download_series("1.2", "1.2.3", tmp_path / "out")
        with pytest.raises(MultipartError, match="max_parts"):
            await client.retrieve_series("1.2", "1.2.3")
    assert list(tmp_path.iterdir()) == []
    async with wire.client(lambda request: answer) as client:  # the default: 100,000
        assert len(await client.retrieve_series("1.2", "1.2.3")) == 50
    with pytest.raises(DicomWebUsageError, match="max_parts"):
        AsyncDicomWebClient("http://127.0.0.1:9/dicom-web", max_parts=0)


async def test_an_orthanc_id_that_is_not_one_never_reaches_a_delete_url(wire: Wire) -> None:
    deletes: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            deletes.append(request.url.path)
            return httpx.Response(200, json={})
        return httpx.Response(200, json=[{"Type": "Study", "ID": "../patients/P1"}])

    async with wire.client(server, delete_strategy="orthanc") as client:
        with pytest.raises(UnexpectedResponseError, match="not an Orthanc identifier"):
            await client.delete_study("1.2")
    assert deletes == []


# -- 8. credentials that break a URL ----------------------------------------------------

PASSWORD = "Pa55word-Se1cret"


@pytest.mark.parametrize("mark", ["#", "?", "/"])
def test_a_password_that_breaks_the_url_is_refused_without_any_of_it(mark: str) -> None:
    password = PASSWORD[:8] + mark + PASSWORD[8:]
    url = f"http://admin:{password}@127.0.0.1:8042/dicom-web"
    with pytest.raises(DicomWebUsageError, match="percent-encode") as refused:
        AsyncDicomWebClient(url)
    for link in chain(refused.value):
        assert PASSWORD[:8] not in str(link) and PASSWORD[8:] not in str(link)
    done = subprocess.run(
        [sys.executable, "-m", "aiodicomweb", "--url", url, "search", "studies"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert PASSWORD[:8] not in done.stderr + done.stdout
    assert PASSWORD[8:] not in done.stderr + done.stdout


def test_a_percent_encoded_password_is_taken_as_basic_auth() -> None:
    client = AsyncDicomWebClient("http://admin:Pa55%23word@127.0.0.1:8042/dicom-web")
    assert "Pa55" not in repr(client)


# -- 9. long destination names -----------------------------------------------------------


async def test_a_long_destination_name_downloads_and_a_too_long_one_is_named(
    wire: Wire, tmp_path: Path
) -> None:
    answer = httpx.Response(200, headers={"Content-Type": MULTIPART}, content=multipart(b"one"))
    async with wire.client(lambda request: answer) as client:
        long_name = tmp_path / ("d" * 250)  # its staging sibling once did not fit
        result = await client.download_series("1.2", "1.2.3", long_name)
        assert result.instances == 1 and (long_name / "file000000.dcm").read_bytes() == b"one"
        too_long = tmp_path / ("e" * 300)
        with pytest.raises(OSError, match="too long") as refused:
            await client.download_series("1.2", "1.2.3", too_long)
    assert refused.value.errno == errno.ENAMETOOLONG
    assert refused.value.filename == str(too_long)
    assert sorted(os.listdir(tmp_path)) == ["d" * 250]


# -- 6. a parent folder shared by parallel downloads (the legacy study folder) ----------


def test_a_parent_made_by_another_download_at_the_same_moment_is_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiodicomweb import _bulk_download

    study = tmp_path / "study"
    real_mkdir = os.mkdir

    def raced_mkdir(path: Any, *args: Any) -> None:
        if Path(path) == study and not study.exists():
            real_mkdir(path)  # another thread's download wins the race
        real_mkdir(path, *args)

    monkeypatch.setattr(os, "mkdir", raced_mkdir)
    with _bulk_download.parents_created(study / "series-a", create=True):
        pass
    assert study.is_dir()


def test_a_failing_download_never_removes_a_parent_another_one_uses(tmp_path: Path) -> None:
    from aiodicomweb import _bulk_download

    study = tmp_path / "study"
    first = _bulk_download.parents_created(study / "series-a", create=True)
    second = _bulk_download.parents_created(study / "series-b", create=True)
    first.__enter__()  # makes the study folder
    second.__enter__()  # finds it there
    failure = RuntimeError("series a failed")
    assert not first.__exit__(RuntimeError, failure, None)
    assert study.is_dir()  # series b goes on in it
    (study / "series-b").mkdir()
    second.__exit__(None, None, None)
    assert study.is_dir()
    with pytest.raises(RuntimeError):
        with _bulk_download.parents_created(tmp_path / "other" / "series", create=True):
            raise RuntimeError("the only user failed")
    assert not (tmp_path / "other").exists()  # made for it, empty, removed


# -- 5. slow servers ---------------------------------------------------------------------


class Trickle(httpx.AsyncByteStream):
    """A body sent a byte at a time, each byte well within any read timeout."""

    def __init__(self, data: bytes, pause: float) -> None:
        self.data, self.pause = data, pause

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for index in range(len(self.data)):
            yield self.data[index : index + 1]
            await anyio.sleep(self.pause)


def trickled(body: bytes, pause: float = 0.02) -> Any:
    headers = {"Content-Type": "application/dicom+json"}
    return lambda request: httpx.Response(200, headers=headers, stream=Trickle(body, pause))


async def test_a_trickled_answer_is_ended_by_min_rate_as_a_timeout(wire: Wire) -> None:
    body = b"[" + b" " * 2000 + b"]"  # 40 s at this pace
    async with wire.client(trickled(body), min_rate=1000, min_rate_window=0.3) as client:
        with anyio.fail_after(20):  # the guard under test ends it long before
            with pytest.raises(DicomWebTimeoutError, match="min_rate"):
                await client.search_studies()


async def test_min_rate_none_lets_a_slow_answer_finish(wire: Wire) -> None:
    body = b"[" + b" " * 20 + b"]"
    async with wire.client(trickled(body), min_rate=None) as client:
        assert await client.search_studies() == []


def test_min_rate_settings_are_checked() -> None:
    with pytest.raises(DicomWebUsageError, match="positive"):
        AsyncDicomWebClient("http://127.0.0.1:9/dicom-web", min_rate=0)
    with pytest.raises(DicomWebUsageError, match="positive"):
        AsyncDicomWebClient("http://127.0.0.1:9/dicom-web", min_rate_window=-1)
