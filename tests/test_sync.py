"""The blocking DicomWebClient: same surface as the async core, against a real Orthanc."""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

import aiodicomweb
from aiodicomweb import AsyncDicomWebClient, DicomWebClient, DicomWebHTTPError, RetryPolicy
from tests.support.corpus import Corpus, stored_bytes
from tests.support.dicomgen import TEST_CORPUS
from tests.support.orthanc import OrthancServer

ALPHA, ALPHA_MR, *_ = TEST_CORPUS


@pytest.fixture
def client(orthanc: OrthancServer, corpus: Corpus) -> Iterator[DicomWebClient]:
    with DicomWebClient(orthanc.dicomweb_url) as client:
        yield client


def public_methods(cls: type) -> dict[str, object]:
    return {
        name: member
        for name, member in inspect.getmembers(cls, callable)
        if not name.startswith("_") and name not in {"aclose", "close"}
    }


def test_every_async_method_has_a_blocking_twin_with_the_same_signature():
    async_methods = public_methods(AsyncDicomWebClient)
    sync_methods = public_methods(DicomWebClient)
    assert set(async_methods) == set(sync_methods)
    for name, method in async_methods.items():
        assert inspect.signature(sync_methods[name]) == inspect.signature(method), name
    assert inspect.signature(DicomWebClient) == inspect.signature(AsyncDicomWebClient)


def test_public_names_are_curated():
    assert sorted(aiodicomweb.__all__) == sorted(set(aiodicomweb.__all__))
    for name in aiodicomweb.__all__:
        assert hasattr(aiodicomweb, name), name
    assert "DicomWebClient" in aiodicomweb.__all__
    assert "DicomWebAdapter_Fallback" in aiodicomweb.__all__


def test_search_and_retrieve_block_and_return_values(client, orthanc):
    studies = client.search_studies({"PatientName": "TEST^ALPHA"})
    assert [s["0020000D"]["Value"][0] for s in studies] == [ALPHA.study_uid]
    sop = f"{ALPHA.series_uid}.1"
    assert client.retrieve_instance(ALPHA.study_uid, ALPHA.series_uid, sop) == stored_bytes(
        orthanc, sop
    )


def test_stream_series_is_a_sync_context_manager_of_parts(client, corpus):
    with client.stream_series(ALPHA_MR.study_uid, ALPHA_MR.series_uid) as parts:
        bodies = [b"".join(part.iter_bytes()) for part in parts]
    assert sorted(bodies) == sorted(i.data for i in corpus.series(ALPHA_MR.series_uid))


def test_search_pages_is_a_sync_iterator(client):
    pages = list(client.search_pages("instances", ALPHA.study_uid, ALPHA.series_uid, page_size=5))
    assert [len(page) for page in pages] == [5, 5, 2]


def test_download_series_blocks_until_the_folder_is_complete(client, orthanc, tmp_path):
    result = client.download_series(ALPHA.study_uid, ALPHA.series_uid, tmp_path / "s")
    assert result.instances == ALPHA.instances
    assert len(os.listdir(tmp_path / "s")) == ALPHA.instances


def test_errors_are_the_documented_types(client):
    with pytest.raises(DicomWebHTTPError) as caught:
        client.retrieve_series(ALPHA.study_uid, "1.2.3.4")
    assert isinstance(caught.value, ConnectionError)


def test_works_from_threads_concurrently(client):
    def count() -> int:
        return len(client.search_instances(ALPHA.study_uid, ALPHA.series_uid))

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda _: count(), range(8))) == [ALPHA.instances] * 8


def test_works_inside_a_running_event_loop(client):
    async def notebook_cell() -> int:
        # Sync code called from within a running loop, as in Jupyter or a Qt app.
        return len(client.search_series(ALPHA.study_uid))

    assert asyncio.run(notebook_cell()) == 2


def test_close_is_idempotent_and_a_closed_client_refuses_calls(orthanc):
    client = DicomWebClient(orthanc.dicomweb_url)
    client.close()
    client.close()
    assert client.closed
    with pytest.raises(RuntimeError, match="closed"):
        client.search_studies()
    with pytest.raises(RuntimeError, match="closed"), client.stream_series("1.2", "1.2.3"):
        pass


# In a fresh interpreter, so that no other client of the suite holds the thread.
SHARED_THREAD = """
import gc, sys, threading
from aiodicomweb import DicomWebClient

def portal_threads():
    return [t for t in threading.enumerate() if "portal" in t.name]

assert portal_threads() == []
first, second = DicomWebClient(sys.argv[1]), DicomWebClient(sys.argv[1])
assert len(first.search_studies()) == len(second.search_studies())
assert len(portal_threads()) == 1, portal_threads()
first.close()
assert len(portal_threads()) == 1 and second.search_studies() is not None
del second
gc.collect()
assert portal_threads() == [], portal_threads()
third = DicomWebClient(sys.argv[1])
assert len(portal_threads()) == 1 and third.search_studies() is not None
third.close()
assert portal_threads() == []
print("ok")
"""


def test_clients_share_one_thread_that_stops_with_the_last_one(orthanc):
    done = subprocess.run(
        [sys.executable, "-c", SHARED_THREAD, orthanc.dicomweb_url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_retry_policy_can_be_replaced(client):
    client.retry = RetryPolicy(max_attempts=2)
    assert client.async_client.retry == RetryPolicy(max_attempts=2)


def test_a_client_closed_on_the_loop_thread_is_closed_without_waiting_for_itself(orthanc):
    with DicomWebClient(orthanc.dicomweb_url) as keeper:  # keeps the shared loop running
        other = DicomWebClient(orthanc.dicomweb_url)
        other.search_studies()
        keeper._portal.call(other.close)  # as when collected by gc on the loop's thread
        assert other.closed
        core = other.async_client
        for _ in range(200):
            if core._session.requester.closed:
                break
            time.sleep(0.01)
        assert core._session.requester.closed
        assert keeper.search_studies() is not None
