"""STOW-RS against a real Orthanc: sources, batching, partial failures, store_directory."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pydicom
import pytest

from aiodicomweb import AsyncDicomWebClient, DicomWebUsageError
from aiodicomweb._bulk_store import _batch_target
from tests.support.corpus import delete_study, orthanc_id, stored_bytes
from tests.support.dicomgen import SeriesSpec, generate_series
from tests.support.orthanc import OrthancServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """STOW against one Orthanc: asyncio only, not conftest's asyncio and trio."""
    return "asyncio"


@pytest.fixture
async def client(orthanc: OrthancServer) -> AsyncIterator[AsyncDicomWebClient]:
    async with AsyncDicomWebClient(orthanc.dicomweb_url) as client:
        yield client


@pytest.fixture
def fresh_study(orthanc: OrthancServer, request: pytest.FixtureRequest):
    """A generated series under a study number unique to the test; removed afterwards."""
    number = 600 + abs(hash(request.node.name)) % 10_000
    spec = SeriesSpec(study=number, series=1, instances=6, rows=64, columns=64)
    instances = list(generate_series(spec))
    yield spec, instances
    delete_study(orthanc, spec.study_uid)


def write_files(folder: Path, instances) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, instance in enumerate(instances):
        path = folder / f"img{n}.dcm"
        path.write_bytes(instance.data)
        paths.append(path)
    return paths


async def test_store_paths_bytes_and_datasets_byte_exact(client, orthanc, fresh_study, tmp_path):
    spec, instances = fresh_study
    paths = write_files(tmp_path, instances[:2])
    dataset = pydicom.dcmread(io.BytesIO(instances[4].data))
    items = [*paths, instances[2].data, bytearray(instances[3].data), dataset]
    result = await client.store(items)
    assert result.ok, result.summary()
    assert {s.sop_instance_uid for s in result.stored} == {
        i.sop_instance_uid for i in instances[:5]
    }
    assert all(s.retrieve_url and spec.study_uid in s.retrieve_url for s in result.stored)
    for instance in instances[:4]:
        assert stored_bytes(orthanc, instance.sop_instance_uid) == instance.data


async def test_store_splits_requests_and_accepts_async_iterables(client, orthanc, fresh_study):
    spec, instances = fresh_study

    async def produce():
        for instance in instances:
            yield instance.data

    result = await client.store(produce(), max_instances_per_request=2, concurrency=2)
    assert result.ok and len(result.stored) == len(instances)
    assert len(await client.search_instances(spec.study_uid)) == len(instances)


async def test_store_by_request_size_sends_everything(client, fresh_study):
    _, instances = fresh_study
    size = max(len(i.data) for i in instances)
    result = await client.store([i.data for i in instances], max_request_size=size + 1)
    assert result.ok and len(result.stored) == len(instances)


async def test_store_reports_garbage_parts_as_failed_with_their_source(client, fresh_study):
    _, instances = fresh_study
    result = await client.store([instances[0].data, b"this is not DICOM"])
    assert not result.ok
    assert [s.sop_instance_uid for s in result.stored] == [instances[0].sop_instance_uid]
    assert [f.source for f in result.failed] == ["<bytes #1>"]


async def test_store_into_other_study_is_a_failure_with_reason(client, fresh_study):
    _, instances = fresh_study
    result = await client.store([instances[0].data], study_uid="1.2.3.4.5")
    assert not result.ok and not result.stored
    (failed,) = result.failed
    assert failed.sop_instance_uid == instances[0].sop_instance_uid
    assert failed.failure_reason == 0x0110
    assert failed.source == "<bytes #0>"


async def test_store_refuses_unsupported_items_before_sending(client):
    with pytest.raises(DicomWebUsageError):
        await client.store([12345])


async def test_a_named_file_that_is_not_dicom_is_refused_before_any_request(tmp_path):
    requests: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda r: requests.append(r) or httpx.Response(200))
    (tmp_path / "notes.txt").write_text("not dicom")
    dicom = tmp_path / "one.dcm"
    dicom.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    async with AsyncDicomWebClient("http://pacs.test/dicom-web", transport=transport) as client:
        for items in ([dicom, tmp_path / "notes.txt"], iter([tmp_path / "notes.txt"])):
            with pytest.raises(DicomWebUsageError, match=r"notes\.txt: not DICOM"):
                await client.store(items)
    assert requests == []


async def test_store_missing_file_is_an_os_error(client, tmp_path):
    with pytest.raises(FileNotFoundError):
        await client.store([tmp_path / "missing.dcm"])


async def test_store_directory_walks_filters_and_reports(client, orthanc, fresh_study, tmp_path):
    _, instances = fresh_study
    write_files(tmp_path / "a", instances[:2])
    write_files(tmp_path / "a" / "deeper", instances[2:4])
    write_files(tmp_path / "skipped", instances[4:])
    (tmp_path / "a" / "notes.txt").write_text("not dicom")
    (tmp_path / "a" / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    os.symlink(tmp_path / "nowhere.dcm", tmp_path / "a" / "broken.dcm")
    result = await client.store_directory(tmp_path, include_regex=r"^a/")
    stored = {s.sop_instance_uid for s in result.stored}
    assert stored == {i.sop_instance_uid for i in instances[:4]}
    assert [f.source for f in result.failed] == [str(tmp_path / "a" / "broken.dcm")]
    assert orthanc_id(orthanc, instances[4].sop_instance_uid, "Instance") is None
    skipped = {(Path(s.path).name, s.reason) for s in result.skipped}
    assert skipped == {("notes.txt", "not DICOM"), ("DICOMDIR", "DICOMDIR")}
    assert result.summary().endswith("2 skipped: 1 DICOMDIR, 1 not DICOM")


async def test_store_directory_of_missing_folder(client, tmp_path):
    with pytest.raises(FileNotFoundError):
        await client.store_directory(tmp_path / "missing")


async def test_store_reports_progress_after_each_request(client, fresh_study):
    _, instances = fresh_study
    seen = []
    bodies = [i.data for i in instances]
    result = await client.store(bodies, max_instances_per_request=2, progress=seen.append)
    assert result.ok
    assert sorted(p.instances for p in seen) == [2, 4, 6]
    last = max(seen, key=lambda p: p.instances)
    assert last.bytes == sum(map(len, bodies)) == last.total_bytes
    assert last.total_instances == len(bodies) and last.failed == 0


@pytest.mark.parametrize(
    ("total", "limit", "concurrency", "expected"),
    [
        pytest.param(None, 100_000_000, 3, 16_000_000, id="unknown-total"),
        pytest.param(120_000_000, 100_000_000, 3, 20_000_000, id="two-per-worker"),
        pytest.param(1_000_000, 100_000_000, 3, 4_000_000, id="small-total-floor"),
        pytest.param(600_000_000, 50_000_000, 2, 50_000_000, id="capped-by-max"),
        pytest.param(120_000_000, 1_000, 3, 1_000, id="tiny-max-wins"),
    ],
)
def test_batch_target_keeps_requests_concurrent(total, limit, concurrency, expected):
    assert _batch_target(total, limit, concurrency) == expected


async def test_a_dataset_that_is_no_dicom_file_is_a_usage_error_before_any_request():
    requests: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda r: requests.append(r) or httpx.Response(200))
    async with AsyncDicomWebClient("http://pacs.test/dicom-web", transport=transport) as client:
        with pytest.raises(DicomWebUsageError, match="cannot be written as a DICOM file"):
            await client.store([pydicom.Dataset()])
    assert requests == []
