"""AsyncDicomWebClient against a real Orthanc: QIDO, WADO, DELETE, auth, a server that is down.

Expected values come from the generator and from Orthanc's own REST API, never
from the client under test.
"""

from __future__ import annotations

import datetime
import io
from collections.abc import AsyncIterator

import pydicom
import pytest

from aiodicomweb import (
    AsyncDicomWebClient,
    DicomWebHTTPError,
    DicomWebTransportError,
    InvalidUIDError,
    RetryPolicy,
)
from tests.conftest import AUTH_PASSWORD, AUTH_USER
from tests.support.corpus import Corpus, orthanc_id, stored_bytes, upload_instances
from tests.support.dicomgen import TEST_CORPUS, SeriesSpec, generate_series, make_dataset
from tests.support.orthanc import OrthancServer, free_port

pytestmark = pytest.mark.anyio

ALPHA, ALPHA_MR, BETA_MULTIFRAME, BETA_RLE, BETA_DEFLATED = TEST_CORPUS


@pytest.fixture
async def client(orthanc: OrthancServer, corpus: Corpus) -> AsyncIterator[AsyncDicomWebClient]:
    async with AsyncDicomWebClient(orthanc.dicomweb_url) as client:
        yield client


def uids(results: list[dict[str, object]], tag: str) -> set[str]:
    return {r[tag]["Value"][0] for r in results}  # type: ignore[index]


STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
SOP_UID = "00080018"


# -- QIDO-RS -------------------------------------------------------------------------


async def test_search_studies_finds_every_uploaded_study(client, corpus: Corpus):
    assert uids(await client.search_studies(), STUDY_UID) == set(corpus.study_uids)


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        pytest.param({"PatientName": "TEST^ALPHA"}, {ALPHA.study_uid}, id="caret-unencoded"),
        pytest.param({"PatientName": "TEST^B*"}, {BETA_RLE.study_uid}, id="wildcard"),
        pytest.param({"00100010": "TEST^ALPHA"}, {ALPHA.study_uid}, id="by-tag"),
        pytest.param({"PatientID": "TEST-BETA"}, {BETA_RLE.study_uid}, id="hyphen"),
        pytest.param(
            {"StudyDate": (datetime.date(2024, 2, 1), datetime.date(2024, 2, 28))},
            {BETA_RLE.study_uid},
            id="date-range",
        ),
        pytest.param({"StudyDate": ("20240110", None)}, {ALPHA.study_uid, BETA_RLE.study_uid},
                     id="open-range"),
        pytest.param(
            {"StudyInstanceUID": [ALPHA.study_uid, BETA_RLE.study_uid]},
            {ALPHA.study_uid, BETA_RLE.study_uid},
            id="uid-list",
        ),
        pytest.param({"PatientName": "NOBODY^*"}, set(), id="no-match"),
    ],
)  # fmt: skip
async def test_search_studies_matches_on_orthanc(client, match, expected):
    assert uids(await client.search_studies(match), STUDY_UID) == expected


async def test_search_studies_fuzzy_and_include_fields(client):
    results = await client.search_studies(
        {"PatientName": "TEST^ALPHA"}, fuzzy=True, include_fields=["StudyDescription"]
    )
    assert uids(results, STUDY_UID) == {ALPHA.study_uid}
    assert results[0]["00081030"]["Value"] == [ALPHA.study_description]


async def test_search_limit_and_offset_page_through_instances(client):
    first = await client.search_instances(ALPHA.study_uid, ALPHA.series_uid, limit=5)
    second = await client.search_instances(ALPHA.study_uid, ALPHA.series_uid, limit=5, offset=5)
    assert len(first) == len(second) == 5
    assert not uids(first, SOP_UID) & uids(second, SOP_UID)


async def test_search_pages_walks_every_instance_once(client, corpus: Corpus):
    pages = [
        page
        async for page in client.search_pages(
            "instances", ALPHA.study_uid, ALPHA.series_uid, page_size=5
        )
    ]
    assert [len(p) for p in pages] == [5, 5, 2]
    found = [r[SOP_UID]["Value"][0] for page in pages for r in page]
    assert sorted(found) == sorted(i.sop_instance_uid for i in corpus.series(ALPHA.series_uid))


@pytest.mark.parametrize(
    ("scope", "count"),
    [
        pytest.param({}, 5, id="all-series"),
        pytest.param({"study_uid": ALPHA.study_uid}, 2, id="series-of-study"),
    ],
)
async def test_search_series_at_each_resource(client, scope, count):
    assert len(await client.search_series(**scope)) == count


@pytest.mark.parametrize(
    ("scope", "count"),
    [
        pytest.param({}, sum(s.instances for s in TEST_CORPUS), id="all-instances"),
        pytest.param({"study_uid": ALPHA.study_uid}, 17, id="instances-of-study"),
        pytest.param(
            {"study_uid": ALPHA.study_uid, "series_uid": ALPHA_MR.series_uid}, 5,
            id="instances-of-series",
        ),
    ],
)  # fmt: skip
async def test_search_instances_at_each_resource(client, scope, count):
    assert len(await client.search_instances(**scope)) == count


async def test_search_series_by_modality(client):
    found = await client.search_series(ALPHA.study_uid, {"Modality": "MR"})
    assert uids(found, SERIES_UID) == {ALPHA_MR.series_uid}


async def test_search_of_unknown_study_is_empty(client):
    assert await client.search_series("1.2.3.4") == []


# -- WADO-RS ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [pytest.param(spec, id=name) for spec, name in zip(TEST_CORPUS,
     ["ct", "mr", "multiframe", "rle", "deflated"], strict=True)],
)  # fmt: skip
async def test_retrieve_instance_is_byte_equal_to_orthanc(client, orthanc, spec: SeriesSpec):
    sop = f"{spec.series_uid}.1"
    data = await client.retrieve_instance(spec.study_uid, spec.series_uid, sop)
    assert data == stored_bytes(orthanc, sop)


async def test_retrieve_series_returns_every_instance_byte_equal(client, orthanc, corpus):
    bodies = await client.retrieve_series(ALPHA.study_uid, ALPHA.series_uid)
    expected = [stored_bytes(orthanc, i.sop_instance_uid) for i in corpus.series(ALPHA.series_uid)]
    assert sorted(bodies) == sorted(expected)


async def test_retrieve_study_returns_all_its_instances(client, corpus):
    bodies = await client.retrieve_study(BETA_RLE.study_uid)
    assert sorted(bodies) == sorted(i.data for i in corpus.study(BETA_RLE.study_uid))


async def test_stream_series_parts_carry_headers_and_bytes(client, orthanc, corpus):
    seen = []
    async with client.stream_series(ALPHA_MR.study_uid, ALPHA_MR.series_uid) as parts:
        async for part in parts:
            chunks = [chunk async for chunk in part.aiter_bytes()]
            body = b"".join(chunks)
            assert part.content_type == "application/dicom"
            assert part.content_length == len(body)
            seen.append(body)
    expected = [i.data for i in corpus.series(ALPHA_MR.series_uid)]
    assert sorted(seen) == sorted(expected)


async def test_stream_series_skips_parts_the_caller_does_not_read(client):
    async with client.stream_series(ALPHA.study_uid, ALPHA.series_uid) as parts:
        indexes = [part.index async for part in parts]
    assert indexes == list(range(ALPHA.instances))


async def test_explicit_transfer_syntax_is_negotiated(client, orthanc):
    sop = f"{ALPHA.series_uid}.1"
    data = await client.retrieve_instance(
        ALPHA.study_uid, ALPHA.series_uid, sop, transfer_syntax="1.2.840.10008.1.2.1"
    )
    assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"


async def test_metadata_at_every_level(client):
    study = await client.retrieve_study_metadata(ALPHA.study_uid)
    series = await client.retrieve_series_metadata(ALPHA.study_uid, ALPHA_MR.series_uid)
    sop = f"{ALPHA_MR.series_uid}.3"
    instance = await client.retrieve_instance_metadata(ALPHA.study_uid, ALPHA_MR.series_uid, sop)
    assert len(study) == ALPHA.instances + ALPHA_MR.instances
    assert uids(series, SERIES_UID) == {ALPHA_MR.series_uid} and len(series) == 5
    assert instance[SOP_UID]["Value"] == [sop]


async def test_retrieve_frames_of_a_multiframe_instance(client):
    spec = BETA_MULTIFRAME
    sop = f"{spec.series_uid}.1"
    frames = await client.retrieve_frames(spec.study_uid, spec.series_uid, sop, [1, 3])
    pixels = make_dataset(spec, 1).PixelData
    frame_size = spec.rows * spec.columns * 2
    assert frames == [pixels[:frame_size], pixels[2 * frame_size : 3 * frame_size]]


async def test_frames_stream_as_parts_and_rendered_frames_carry_their_type(client):
    spec = BETA_MULTIFRAME
    sop = f"{spec.series_uid}.1"
    async with client.stream_frames(spec.study_uid, spec.series_uid, sop, [2, 3]) as parts:
        streamed = [await part.read() async for part in parts]
    assert streamed == await client.retrieve_frames(spec.study_uid, spec.series_uid, sop, [2, 3])
    image = await client.retrieve_rendered(
        spec.study_uid, spec.series_uid, sop, frame=2, additional_params={"vendor": "ignored"}
    )
    assert image.startswith(b"\xff\xd8\xff") and image.media_type == "image/jpeg"


async def test_jpeg_frames_come_in_the_jpeg_transfer_syntax_orthanc_picks(client):
    sop = f"{ALPHA.series_uid}.1"
    frames = await client.retrieve_frames(
        ALPHA.study_uid, ALPHA.series_uid, sop, [1], media_type="image/jpeg"
    )
    assert len(frames) == 1 and frames[0].startswith(b"\xff\xd8\xff")


async def test_a_byte_range_orthanc_ignores_is_cut_to_the_range(client):
    sop = f"{ALPHA.series_uid}.2"
    meta = await client.retrieve_instance_metadata(ALPHA.study_uid, ALPHA.series_uid, sop)
    uri = meta["7FE00010"]["BulkDataURI"]
    assert await client.retrieve_bulkdata(uri, byte_range=(10, 109)) == [
        make_dataset(ALPHA, 2).PixelData[10:110]
    ]


async def test_orthanc_logs_no_error_for_what_the_client_asks(client, orthanc):
    def mime_errors() -> int:
        logs = list(orthanc.workdir.glob("*.log*"))
        assert logs, "Orthanc's log is where the fixture writes it"
        return sum(
            p.read_text(errors="replace").count("Unsupported return MIME type") for p in logs
        )

    before = mime_errors()
    await client.search_studies()
    await client.retrieve_series_metadata(ALPHA.study_uid, ALPHA.series_uid)
    assert mime_errors() == before


async def test_retrieve_bulkdata_from_metadata_uri(client):
    sop = f"{ALPHA.series_uid}.2"
    meta = await client.retrieve_instance_metadata(ALPHA.study_uid, ALPHA.series_uid, sop)
    parts = await client.retrieve_bulkdata(meta["7FE00010"]["BulkDataURI"])
    assert parts == [make_dataset(ALPHA, 2).PixelData]


@pytest.mark.parametrize(
    ("media_type", "magic", "options"),
    [
        pytest.param("image/jpeg", b"\xff\xd8\xff", {}, id="jpeg"),
        pytest.param("image/png", b"\x89PNG", {"viewport": (64, 64)}, id="png-viewport"),
        pytest.param("image/jpeg", b"\xff\xd8\xff", {"quality": 50}, id="jpeg-quality"),
    ],
)
async def test_retrieve_rendered_instance(client, media_type, magic, options):
    sop = f"{ALPHA.series_uid}.1"
    image = await client.retrieve_rendered(
        ALPHA.study_uid, ALPHA.series_uid, sop, media_type=media_type, **options
    )
    assert image.startswith(magic)


async def test_retrieve_unknown_series_is_http_404(client):
    with pytest.raises(DicomWebHTTPError) as caught:
        await client.retrieve_series(ALPHA.study_uid, "1.2.3.4")
    assert caught.value.status == 404
    assert isinstance(caught.value, ConnectionError)


async def test_invalid_uid_is_refused_before_any_request(client):
    with pytest.raises(InvalidUIDError):
        await client.retrieve_series(ALPHA.study_uid, "../../etc")


# -- DELETE ----------------------------------------------------------------------------


def _upload_disposable(server: OrthancServer, study: int) -> list[SeriesSpec]:
    specs = [SeriesSpec(study=study, series=n, instances=2, rows=32, columns=32) for n in (1, 2)]
    upload_instances(server, [i for spec in specs for i in generate_series(spec)])
    return specs


async def test_dicomweb_delete_on_orthanc_names_the_orthanc_strategy(client):
    with pytest.raises(DicomWebHTTPError, match="delete_strategy='orthanc'") as caught:
        await client.delete_study(ALPHA.study_uid)
    assert caught.value.status == 405


async def test_orthanc_delete_strategy_removes_series_then_study(orthanc, corpus):
    first, second = _upload_disposable(orthanc, 800)
    async with AsyncDicomWebClient(orthanc.dicomweb_url, delete_strategy="orthanc") as client:
        await client.delete_series(first.study_uid, first.series_uid)
        assert uids(await client.search_series(first.study_uid), SERIES_UID) == {second.series_uid}
        await client.delete_instance(second.study_uid, second.series_uid, f"{second.series_uid}.1")
        assert len(await client.search_instances(second.study_uid)) == 1
        await client.delete_study(first.study_uid)
        assert await client.search_studies({"StudyInstanceUID": first.study_uid}) == []
    assert orthanc_id(orthanc, first.study_uid, "Study") is None


async def test_orthanc_delete_of_missing_or_mismatched_resource_is_404(orthanc, corpus):
    (spec, _) = _upload_disposable(orthanc, 801)
    async with AsyncDicomWebClient(orthanc.dicomweb_url, delete_strategy="orthanc") as client:
        with pytest.raises(DicomWebHTTPError) as missing:
            await client.delete_study("1.2.3.4.5")
        with pytest.raises(DicomWebHTTPError) as mismatched:
            await client.delete_series(ALPHA.study_uid, spec.series_uid)
    assert missing.value.status == mismatched.value.status == 404
    assert orthanc_id(orthanc, spec.series_uid, "Series") is not None


# -- authentication and an absent server -------------------------------------------------


async def test_basic_auth_against_the_auth_orthanc(orthanc_auth, corpus_auth):
    auth = (AUTH_USER, AUTH_PASSWORD)
    async with AsyncDicomWebClient(orthanc_auth.dicomweb_url, auth=auth) as client:
        data = await client.retrieve_instance(ALPHA.study_uid, ALPHA.series_uid,
                                              f"{ALPHA.series_uid}.1")  # fmt: skip
    assert data == stored_bytes(orthanc_auth, f"{ALPHA.series_uid}.1")


@pytest.mark.parametrize(
    "auth",
    [pytest.param(None, id="no-credentials"), pytest.param((AUTH_USER, "wrong"), id="wrong")],
)
async def test_auth_orthanc_refuses_bad_credentials_with_401(orthanc_auth, corpus_auth, auth):
    async with AsyncDicomWebClient(orthanc_auth.dicomweb_url, auth=auth) as client:
        with pytest.raises(DicomWebHTTPError) as caught:
            await client.search_studies()
    assert caught.value.status == 401
    assert AUTH_PASSWORD not in str(caught.value)


async def test_server_that_is_down_is_a_connection_error_after_retries():
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    policy = RetryPolicy(max_attempts=3, sleep=record)
    async with AsyncDicomWebClient(url, retry=policy) as client:
        with pytest.raises(DicomWebTransportError) as caught:
            await client.search_studies()
    assert isinstance(caught.value, ConnectionError)
    assert len(waits) == 2
