"""What goes on the wire: URLs, Accept headers, ranges, prefixes, proxies, HTTP/2.

MockTransport records requests for behaviour Orthanc 1.10 does not have
(byte ranges, thumbnails, separate QIDO/WADO/STOW prefixes); a real proxy hop
and a real HTTP/2-enabled client against Orthanc cover the rest.
"""

from __future__ import annotations

import socket

import httpx
import pytest

from aiodicomweb import AsyncDicomWebClient, MultipartError
from tests.support.corpus import Corpus, stored_bytes
from tests.support.dicomgen import TEST_CORPUS
from tests.support.orthanc import OrthancServer
from tests.support.rawserver import raw_server

pytestmark = pytest.mark.anyio

ALPHA = TEST_CORPUS[0]
STUDY, SERIES, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"
BOUNDARY = "rq"
OCTETS = f"multipart/related; type=application/octet-stream; boundary={BOUNDARY}"


@pytest.fixture
def anyio_backend() -> str:
    """Request shapes, not the event loop: asyncio only, not conftest's asyncio and trio."""
    return "asyncio"


class Recorder:
    def __init__(self, response: httpx.Response | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.response = response

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.response is not None:
            return self.response
        body = f"--{BOUNDARY}\r\n\r\nframe-or-bulk\r\n--{BOUNDARY}--\r\n".encode()
        return httpx.Response(200, headers={"Content-Type": OCTETS}, content=body)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def client_for(recorder: Recorder, **options: object) -> AsyncDicomWebClient:
    return AsyncDicomWebClient("http://pacs.test/dw", transport=httpx.MockTransport(recorder),
                               **options)  # type: ignore[arg-type]  # fmt: skip


@pytest.mark.parametrize(
    ("byte_range", "header"),
    [pytest.param((10, 99), "bytes=10-99", id="closed"),
     pytest.param((10, None), "bytes=10-", id="open")],
)  # fmt: skip
async def test_bulkdata_byte_range_and_relative_uri(byte_range, header):
    body = f"--{BOUNDARY}\r\n\r\nframe-or-bulk\r\n--{BOUNDARY}--\r\n".encode()
    recorder = Recorder(httpx.Response(206, headers={"Content-Type": OCTETS}, content=body))
    async with client_for(recorder) as client:
        parts = await client.retrieve_bulkdata(
            "studies/1.2.3/bulk/7fe00010", byte_range=byte_range
        )
    assert parts == [b"frame-or-bulk"]
    assert str(recorder.last.url) == "http://pacs.test/dw/studies/1.2.3/bulk/7fe00010"
    assert recorder.last.headers["Range"] == header


async def test_bulkdata_media_type_is_matched_whatever_its_case():
    recorder = Recorder()
    plain = {"Content-Type": "application/octet-stream"}
    recorder.response = httpx.Response(200, headers=plain, content=b"bulk")
    async with client_for(recorder) as client:
        parts = await client.retrieve_bulkdata("bulk/1", media_type="Application/Octet-Stream")
    assert parts == [b"bulk"]


async def test_rendered_parameters_are_escaped_values_not_extra_parameters():
    recorder = Recorder()
    recorder.response = httpx.Response(200, headers={"Content-Type": "image/jpeg"}, content=b"j")
    async with client_for(recorder) as client:
        await client.retrieve_rendered(STUDY, SERIES, SOP, window=(40, 400, "LINEAR&quality=5"))
    assert recorder.last.url.params.get_list("window") == ["40,400,LINEAR&quality=5"]
    assert "quality" not in recorder.last.url.params


async def test_frames_ask_for_octet_streams_in_one_request():
    recorder = Recorder()
    async with client_for(recorder) as client:
        await client.retrieve_frames(STUDY, SERIES, SOP, [1, 3, 7])
    assert recorder.last.url.path.endswith(f"/instances/{SOP}/frames/1,3,7")
    accept = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    assert recorder.last.headers["Accept"] == accept


@pytest.mark.parametrize(
    ("transfer_syntax", "accept"),
    [
        pytest.param("*", 'multipart/related; type="application/dicom"; transfer-syntax=*',
                     id="as-stored"),
        pytest.param("1.2.840.10008.1.2.1", 'multipart/related; type="application/dicom"; '
                     "transfer-syntax=1.2.840.10008.1.2.1", id="explicit"),
        pytest.param(None, 'multipart/related; type="application/dicom"', id="server-choice"),
    ],
)  # fmt: skip
async def test_series_accept_keeps_transfer_syntax_outside_the_quoted_type(
    transfer_syntax, accept
):
    recorder = Recorder(httpx.Response(200, headers={"Content-Type": "application/dicom"},
                                       content=b"x"))  # fmt: skip
    async with client_for(recorder) as client:
        await client.retrieve_series(STUDY, SERIES, transfer_syntax=transfer_syntax)
    assert recorder.last.headers["Accept"] == accept
    assert recorder.last.headers["Accept-Encoding"] == "identity"


async def test_thumbnails_of_instance_frame_and_series():
    recorder = Recorder(httpx.Response(200, headers={"Content-Type": "image/png"}, content=b"PNG"))
    async with client_for(recorder) as client:
        await client.retrieve_thumbnail(STUDY, SERIES, SOP, media_type="image/png",
                                        viewport=(64, 48))  # fmt: skip
        await client.retrieve_thumbnail(STUDY, SERIES, SOP, frame=2, media_type="image/png")
        await client.retrieve_thumbnail(STUDY, SERIES, media_type="image/png")
    paths = [(r.url.path, r.url.query) for r in recorder.requests]
    assert paths == [
        (f"/dw/studies/{STUDY}/series/{SERIES}/instances/{SOP}/thumbnail", b"viewport=64,48"),
        (f"/dw/studies/{STUDY}/series/{SERIES}/instances/{SOP}/frames/2/thumbnail", b""),
        (f"/dw/studies/{STUDY}/series/{SERIES}/thumbnail", b""),
    ]
    assert {r.headers["Accept"] for r in recorder.requests} == {"image/png"}


async def test_rendered_window_parameters():
    recorder = Recorder(httpx.Response(200, headers={"Content-Type": "image/jpeg"}, content=b"J"))
    async with client_for(recorder) as client:
        await client.retrieve_rendered(STUDY, SERIES, SOP, window=(40, 400, "LINEAR"), quality=80)
    assert recorder.last.url.query == b"window=40,400,LINEAR&quality=80"


async def test_separate_qido_wado_stow_and_delete_prefixes():
    recorder = Recorder(httpx.Response(200, json=[]))
    async with client_for(recorder, qido_url_prefix="qido", wado_url_prefix="wado",
                          stow_url_prefix="stow", delete_url_prefix="del") as client:  # fmt: skip
        await client.search_series(STUDY)
        await client.retrieve_series_metadata(STUDY, SERIES)
        await client.store(b"\0" * 128 + b"DICM")
        await client.delete_study(STUDY)
    assert [r.url.path for r in recorder.requests] == [
        f"/dw/qido/studies/{STUDY}/series", f"/dw/wado/studies/{STUDY}/series/{SERIES}/metadata",
        "/dw/stow/studies", f"/dw/del/studies/{STUDY}",
    ]  # fmt: skip


async def test_truncation_inside_part_headers_is_a_multipart_error():
    cut = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\nContent-Len".encode()
    content_type = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    recorder = Recorder(httpx.Response(200, headers={"Content-Type": content_type}, content=cut))
    async with client_for(recorder, retry=None) as client:
        with pytest.raises(MultipartError, match="header") as caught:
            await client.retrieve_series(STUDY, SERIES)
    assert caught.value.offset == len(cut)


async def test_requests_go_through_a_configured_proxy():
    heads: list[bytes] = []

    def route(path: str):
        def script(sock: socket.socket) -> None:
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n"
                         b"Content-Length: 2\r\n\r\n[]")  # fmt: skip

        return script

    with raw_server(route, heads=heads) as proxy_url:
        proxy = proxy_url.rsplit("/", 1)[0]
        async with AsyncDicomWebClient("http://pacs.invalid/dw", proxy=proxy) as client:
            assert await client.search_studies() == []
    assert heads[0].startswith(b"GET http://pacs.invalid/dw/studies HTTP/1.1")


async def test_http2_option_works_against_an_http1_server(orthanc: OrthancServer, corpus: Corpus):
    async with AsyncDicomWebClient(orthanc.dicomweb_url, http2=True) as client:
        sop = f"{ALPHA.series_uid}.1"
        data = await client.retrieve_instance(ALPHA.study_uid, ALPHA.series_uid, sop)
        assert len(await client.search_series(ALPHA.study_uid)) == 2
    assert data == stored_bytes(orthanc, sop)
