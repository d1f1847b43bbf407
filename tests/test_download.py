"""Downloads to disk against a real Orthanc, plus the refusals Orthanc cannot show (mocked)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pydicom
import pytest

from aiodicomweb import (
    AsyncDicomWebClient,
    DicomWebHTTPError,
    DicomWebUsageError,
    DownloadProgress,
    InvalidUIDError,
    MultipartUnsupportedError,
    UnexpectedResponseError,
)
from aiodicomweb._session import Session
from tests.support.corpus import Corpus, stored_bytes
from tests.support.dicomgen import TEST_CORPUS, SeriesSpec
from tests.support.orthanc import OrthancServer

pytestmark = pytest.mark.anyio

ALPHA, ALPHA_MR, BETA_MULTIFRAME, BETA_RLE, BETA_DEFLATED = TEST_CORPUS


@pytest.fixture
async def client(orthanc: OrthancServer, corpus: Corpus) -> AsyncIterator[AsyncDicomWebClient]:
    async with AsyncDicomWebClient(orthanc.dicomweb_url) as client:
        yield client


def sop_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def assert_series_folder(folder: Path, orthanc: OrthancServer, spec: SeriesSpec) -> list[str]:
    """Every file is named in sequence and byte-equal to what Orthanc holds; returns SOP UIDs."""
    names = sorted(os.listdir(folder))
    assert names == [f"file{n:06d}.dcm" for n in range(spec.instances)]
    sops = []
    for name in names:
        sop = sop_of(folder / name)
        assert (folder / name).read_bytes() == stored_bytes(orthanc, sop)
        sops.append(sop)
    assert len(set(sops)) == spec.instances
    return sops


def leftovers(parent: Path) -> list[str]:
    return [name for name in os.listdir(parent) if name.endswith(".partial")]


def qido_order(orthanc: OrthancServer, spec: SeriesSpec) -> list[str]:
    url = f"{orthanc.dicomweb_url}/studies/{spec.study_uid}/series/{spec.series_uid}/instances"
    with urllib.request.urlopen(url, timeout=30) as response:
        return [item["00080018"]["Value"][0] for item in json.loads(response.read())]


@pytest.mark.parametrize("spec", [ALPHA, BETA_RLE, BETA_MULTIFRAME], ids=["ct", "rle", "mf"])
async def test_multipart_series_download_is_byte_exact(client, orthanc, tmp_path, spec):
    result = await client.download_series(spec.study_uid, spec.series_uid, tmp_path / "out")
    assert_series_folder(tmp_path / "out", orthanc, spec)
    assert result.instances == spec.instances
    assert result.bytes == sum(f.stat().st_size for f in (tmp_path / "out").iterdir())
    assert leftovers(tmp_path) == []


async def test_per_instance_download_follows_qido_order(client, orthanc, tmp_path):
    await client.download_series(
        ALPHA.study_uid, ALPHA.series_uid, tmp_path / "out", strategy="per_instance",
        concurrency=3,
    )  # fmt: skip
    sops = assert_series_folder(tmp_path / "out", orthanc, ALPHA)
    assert sops == qido_order(orthanc, ALPHA)


async def test_per_instance_listing_in_small_pages_misses_and_repeats_nothing(
    client, orthanc, tmp_path, monkeypatch
):
    monkeypatch.setattr(Session, "FIRST_PAGE", 2)
    monkeypatch.setattr(Session, "LAST_PAGE", 3)
    assert ALPHA.instances > 2 + 3 + 3  # pages of 2, 3, 3, ... then an empty one
    listed = await client.list_instance_uids(ALPHA.study_uid, ALPHA.series_uid)
    assert listed == qido_order(orthanc, ALPHA)
    await client.download_series(
        ALPHA.study_uid, ALPHA.series_uid, tmp_path / "out", strategy="per_instance"
    )
    assert assert_series_folder(tmp_path / "out", orthanc, ALPHA) == listed


@pytest.mark.parametrize("strategy", ["multipart", "per_instance"])
async def test_study_download_puts_each_series_in_its_folder(client, orthanc, tmp_path, strategy):
    dest = tmp_path / "study"
    result = await client.download_study(BETA_RLE.study_uid, dest, strategy=strategy)
    specs = [BETA_MULTIFRAME, BETA_RLE, BETA_DEFLATED]
    assert sorted(os.listdir(dest)) == sorted(s.series_uid for s in specs)
    for spec in specs:
        assert_series_folder(dest / spec.series_uid, orthanc, spec)
    assert result.instances == sum(s.instances for s in specs)


async def test_progress_reports_every_instance_and_the_totals(client, tmp_path):
    seen: list[DownloadProgress] = []
    await client.download_study(ALPHA.study_uid, tmp_path / "s", progress=seen.append)
    per_instance = [p for p in seen if not p.series_done]
    assert len(per_instance) == ALPHA.instances + ALPHA_MR.instances
    assert [p.total_instances for p in per_instance] == list(range(1, len(per_instance) + 1))
    done = {p.series_uid: p for p in seen if p.series_done}
    assert done[ALPHA.series_uid].series_instances == ALPHA.instances
    total = sum(f.stat().st_size for f in (tmp_path / "s").rglob("*.dcm"))
    assert seen[-1].total_bytes == total


async def test_existing_destination_is_refused_untouched(client, tmp_path):
    dest = tmp_path / "there"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        await client.download_series(ALPHA.study_uid, ALPHA.series_uid, dest)
    assert os.listdir(dest) == ["keep.txt"]


async def test_missing_parents_are_made_like_mkdir_p(client, orthanc, tmp_path):
    dest = tmp_path / "a" / "b" / "series"
    result = await client.download_series(ALPHA.study_uid, ALPHA.series_uid, dest)
    assert result.path == dest
    assert_series_folder(dest, orthanc, ALPHA)
    assert os.listdir(tmp_path / "a") == ["b"]


async def test_parents_made_for_a_failed_download_are_removed_again(client, tmp_path):
    with pytest.raises(DicomWebHTTPError):
        await client.download_series(ALPHA.study_uid, "1.2.3.4", tmp_path / "a" / "b" / "out")
    assert os.listdir(tmp_path) == []


async def test_a_file_parent_and_a_refused_missing_parent_are_errors(client, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError) as caught:
        await client.download_series(ALPHA.study_uid, ALPHA.series_uid, tmp_path / "file" / "b")
    assert caught.value.filename == str(tmp_path / "file")
    with pytest.raises(FileNotFoundError) as missing:
        await client.download_series(
            ALPHA.study_uid, ALPHA.series_uid, tmp_path / "a" / "b", create_parent=False
        )
    assert missing.value.filename == str(tmp_path / "a")
    assert sorted(os.listdir(tmp_path)) == ["file"]


async def test_a_study_merges_into_an_existing_folder_only_when_asked(client, orthanc, tmp_path):
    dest = tmp_path / "cohort"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        await client.download_study(BETA_RLE.study_uid, dest)
    result = await client.download_study(BETA_RLE.study_uid, dest, merge=True)
    specs = [BETA_MULTIFRAME, BETA_RLE, BETA_DEFLATED]
    assert sorted(os.listdir(dest)) == sorted([*(s.series_uid for s in specs), "notes.txt"])
    for spec in specs:
        assert_series_folder(dest / spec.series_uid, orthanc, spec)
    assert result.instances == sum(s.instances for s in specs)


async def test_a_merge_that_meets_a_series_folder_downloads_nothing(client, tmp_path):
    dest = tmp_path / "cohort"
    (dest / BETA_RLE.series_uid).mkdir(parents=True)
    with pytest.raises(FileExistsError) as caught:
        await client.download_study(BETA_RLE.study_uid, dest, merge=True)
    assert caught.value.filename == str(dest / BETA_RLE.series_uid)
    assert os.listdir(dest) == [BETA_RLE.series_uid]
    assert os.listdir(dest / BETA_RLE.series_uid) == []


async def test_a_failed_merge_leaves_the_folder_as_it_was(client, tmp_path):
    dest = tmp_path / "cohort"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(DicomWebHTTPError):
        await client.download_study(
            BETA_RLE.study_uid, dest, merge=True, series_uids=[BETA_RLE.series_uid, "1.2.3.4"]
        )
    assert os.listdir(dest) == ["notes.txt"]


def _download_as_nobody(url: str, dest: Path) -> str:
    """Run `download_series` in a forked child that dropped root for `nobody`; its outcome.

    Root may write anywhere, so "parent not writable" can only be shown without it.
    The child shares the loaded interpreter (the venv's Python may not be readable
    by `nobody`) and reports through its exit status only.
    """
    outcomes = {0: "PermissionError", 3: "other error", 4: "no error"}
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 4
        try:
            os.setgid(65534)
            os.setuid(65534)

            async def download() -> None:
                async with AsyncDicomWebClient(url) as client:
                    await client.download_series(ALPHA.study_uid, ALPHA.series_uid, dest)

            anyio.run(download)
        except PermissionError:
            code = 0
        except BaseException:
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return outcomes.get(os.waitstatus_to_exitcode(status), f"status {status}")


def test_unwritable_parent_is_a_permission_error_leaving_nothing(orthanc, corpus):
    top = Path(tempfile.mkdtemp(prefix="aiodicomweb-"))  # not tmp_path: root-only on root
    top.chmod(0o755)  # `nobody` must reach the locked folder
    locked = top / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    dest = locked / "series"
    try:
        if os.geteuid() == 0:
            assert _download_as_nobody(orthanc.dicomweb_url, dest) == "PermissionError"
        else:

            async def download() -> None:
                async with AsyncDicomWebClient(orthanc.dicomweb_url) as client:
                    await client.download_series(ALPHA.study_uid, ALPHA.series_uid, dest)

            with pytest.raises(PermissionError):
                anyio.run(download)
        assert os.listdir(locked) == []
    finally:
        locked.chmod(0o755)
        shutil.rmtree(top)


async def test_invalid_uid_writes_nothing(client, tmp_path):
    with pytest.raises(InvalidUIDError):
        await client.download_series(ALPHA.study_uid, "1.2.x", tmp_path / "out")
    assert os.listdir(tmp_path) == []


async def test_unknown_series_leaves_no_folder(client, tmp_path):
    with pytest.raises(DicomWebHTTPError) as caught:
        await client.download_series(ALPHA.study_uid, "1.2.3.4", tmp_path / "out")
    assert caught.value.status == 404
    assert os.listdir(tmp_path) == []


async def test_cancelling_a_study_download_leaves_nothing(client, tmp_path):
    dest = tmp_path / "study"
    with anyio.CancelScope() as scope:

        def cancel_on_first(progress: DownloadProgress) -> None:
            scope.cancel()

        await client.download_study(ALPHA.study_uid, dest, progress=cancel_on_first)
    assert scope.cancelled_caught
    assert os.listdir(tmp_path) == []


# -- refusals and hostile answers Orthanc will not produce (MockTransport) -------------

STUDY, SERIES = "1.2.3", "1.2.3.4"
DICM = b"\0" * 128 + b"DICM"


def mock_server(series_status: int = 406, series_listing: list[str] | None = None):
    """A server that refuses multipart series and serves single instances."""
    requests: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        requests.append(path)
        json_headers = {"Content-Type": "application/dicom+json"}
        if path.endswith(f"/series/{SERIES}/instances"):
            listing = [{"00080018": {"vr": "UI", "Value": [f"{SERIES}.{n}"]}} for n in (1, 2)]
            return httpx.Response(200, headers=json_headers, content=json.dumps(listing))
        if path.endswith(f"/studies/{STUDY}/series"):
            series = [{"0020000E": {"vr": "UI", "Value": [uid]}} for uid in series_listing or []]
            return httpx.Response(200, headers=json_headers, content=json.dumps(series))
        if "/instances/" in path:
            sop = path.rsplit("/", 1)[1]
            body = DICM + sop.encode()
            return httpx.Response(200, headers={"Content-Type": "application/dicom"}, content=body)
        return httpx.Response(series_status, content=b"multipart not supported")

    return handler, requests


async def test_multipart_refusal_names_the_per_instance_strategy(tmp_path):
    handler, _ = mock_server()
    transport = httpx.MockTransport(handler)
    async with AsyncDicomWebClient("http://pacs.test/dw", transport=transport) as client:
        with pytest.raises(MultipartUnsupportedError, match="per_instance"):
            await client.download_series(STUDY, SERIES, tmp_path / "out")
        assert os.listdir(tmp_path) == []
        await client.download_series(STUDY, SERIES, tmp_path / "out", fallback=True)
    files = sorted((tmp_path / "out").iterdir())
    assert [f.read_bytes() for f in files] == [DICM + f"{SERIES}.{n}".encode() for n in (1, 2)]


async def test_a_series_answered_with_another_media_type_is_a_refusal_too(tmp_path):
    handler, _ = mock_server(200)  # 200, but not multipart/related
    transport = httpx.MockTransport(handler)
    async with AsyncDicomWebClient("http://pacs.test/dw", transport=transport) as client:
        with pytest.raises(MultipartUnsupportedError, match="per_instance"):
            await client.download_series(STUDY, SERIES, tmp_path / "out")
    assert os.listdir(tmp_path) == []


async def test_a_series_named_twice_is_a_usage_error_before_any_request(tmp_path):
    handler, requests = mock_server()
    transport = httpx.MockTransport(handler)
    async with AsyncDicomWebClient("http://pacs.test/dw", transport=transport) as client:
        with pytest.raises(DicomWebUsageError, match="twice"):
            await client.download_study(STUDY, tmp_path / "s", series_uids=[SERIES, SERIES])
    assert requests == []
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "hostile",
    [
        pytest.param("../../escape", id="dotdot"),
        pytest.param("1.2/../../x", id="slash"),
        pytest.param("1.2\x00.3", id="nul"),
        pytest.param("1." * 40 + "1", id="over-64"),
    ],
)
async def test_hostile_series_uid_from_qido_writes_nothing(tmp_path, hostile):
    handler, requests = mock_server(200, series_listing=[SERIES, hostile])
    parent = tmp_path / "parent"
    parent.mkdir()
    async with AsyncDicomWebClient(
        "http://pacs.test/dw", transport=httpx.MockTransport(handler)
    ) as client:
        with pytest.raises(UnexpectedResponseError, match="SeriesInstanceUID"):
            await client.download_study(STUDY, parent / "study")
    assert os.listdir(parent) == []
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["parent"]
    assert not any("/instances/" in r for r in requests)


def listing_server(count: int, cap: int, honours_offset: bool = True, warns: bool = True):
    """Lists `count` instances of SERIES at most `cap` per answer (with the Warning that
    servers capping answers send), honouring `limit` and, if told, `offset`; serves them."""
    queries: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith(f"/series/{SERIES}/instances"):
            query = dict(request.url.params)
            queries.append(query)
            start = int(query.get("offset", 0)) if honours_offset else 0
            end = min(count, start + min(cap, int(query.get("limit", count))))
            listing = [sop_json(f"{SERIES}.{n}") for n in range(start + 1, end + 1)]
            headers = {"Content-Type": "application/dicom+json"}
            if warns and end < count:
                headers["Warning"] = '299 pacs.test "There are additional results to return"'
            return httpx.Response(200, headers=headers, content=json.dumps(listing))
        sop = path.rsplit("/", 1)[1]
        return httpx.Response(200, headers={"Content-Type": "application/dicom"},
                              content=DICM + sop.encode())  # fmt: skip

    return handler, queries


def sop_json(uid: str) -> dict[str, object]:
    return {"00080018": {"vr": "UI", "Value": [uid]}}


@pytest.mark.parametrize("warns", [True, False], ids=["with-warning", "silent"])
async def test_a_server_capping_its_listing_is_paged_to_the_end(tmp_path, warns):
    handler, queries = listing_server(count=40, cap=7, warns=warns)
    async with AsyncDicomWebClient(
        "http://pacs.test/dw", transport=httpx.MockTransport(handler)
    ) as client:
        expected = [f"{SERIES}.{n}" for n in range(1, 41)]
        assert await client.list_instance_uids(STUDY, SERIES) == expected
        result = await client.download_series(
            STUDY, SERIES, tmp_path / "out", strategy="per_instance"
        )
    assert result.instances == 40
    files = sorted((tmp_path / "out").iterdir())
    assert [f.read_bytes() for f in files] == [DICM + uid.encode() for uid in expected]
    assert queries[-1]["offset"] == "40"  # the walk ended on an empty page


async def test_a_server_ignoring_offset_is_listed_whole_once():
    handler, queries = listing_server(count=60, cap=1000, honours_offset=False)
    async with AsyncDicomWebClient(
        "http://pacs.test/dw", transport=httpx.MockTransport(handler)
    ) as client:
        listed = await client.list_instance_uids(STUDY, SERIES)
    assert listed == [f"{SERIES}.{n}" for n in range(1, 61)]
    assert "limit" not in queries[-1]  # the first page came again: one unpaged listing


async def test_a_listing_that_cannot_be_completed_is_an_error_leaving_nothing(tmp_path):
    handler, _ = listing_server(count=60, cap=10, honours_offset=False)
    async with AsyncDicomWebClient(
        "http://pacs.test/dw", transport=httpx.MockTransport(handler)
    ) as client:
        with pytest.raises(UnexpectedResponseError, match="cannot all be listed"):
            await client.download_series(STUDY, SERIES, tmp_path / "out", strategy="per_instance")
    assert os.listdir(tmp_path) == []


async def test_retrieve_instance_accepts_a_single_part_dicom_answer():
    handler, _ = mock_server()
    async with AsyncDicomWebClient(
        "http://pacs.test/dw", transport=httpx.MockTransport(handler)
    ) as client:
        data = await client.retrieve_instance(STUDY, SERIES, f"{SERIES}.7")
    assert data == DICM + f"{SERIES}.7".encode()
