"""The legacy adapter as docs/adapter-api.md documents it, on a real Orthanc."""

from __future__ import annotations

import inspect
import os
from http import HTTPStatus
from pathlib import Path

import httpx
import pydicom
import pytest
import requests

from aiodicomweb import (
    DicomWebAdapter,
    DicomWebAdapter_Fallback,
    RetryPolicy,
    StoreFailedError,
)
from tests.conftest import AUTH_PASSWORD, AUTH_USER
from tests.support.corpus import Corpus, orthanc_id, stored_bytes, upload_instances
from tests.support.dicomgen import TEST_CORPUS, SeriesSpec, generate_series
from tests.support.orthanc import OrthancServer, free_port

ALPHA, ALPHA_MR, BETA_MULTIFRAME, BETA_RLE, BETA_DEFLATED = TEST_CORPUS
ADAPTERS = [
    pytest.param(DicomWebAdapter, id="adapter"),
    pytest.param(DicomWebAdapter_Fallback, id="fallback"),
]


@pytest.fixture(params=ADAPTERS)
def adapter(request, orthanc: OrthancServer, corpus: Corpus):
    with request.param(orthanc.dicomweb_url) as adapter:
        yield adapter


def check_series_folder(folder: Path, orthanc: OrthancServer, spec: SeriesSpec) -> None:
    names = sorted(os.listdir(folder))
    assert names == [f"file{n:06d}.dcm" for n in range(spec.instances)]
    for name in names:
        sop = pydicom.dcmread(folder / name, stop_before_pixels=True).SOPInstanceUID
        assert (folder / name).read_bytes() == stored_bytes(orthanc, str(sop))


def test_constructor_and_methods_match_the_documentation():
    signature = inspect.signature(DicomWebAdapter)
    assert list(signature.parameters) == [
        "dicomWebUrl", "session", "username", "password", "additionalClientParameters",
    ]  # fmt: skip
    assert signature.parameters["password"].default == ""
    retry = inspect.signature(DicomWebAdapter.setHttpRetryParameters).parameters
    assert retry["max_attempts"].default == 5
    assert retry["wait_exponential_multiplier"].default == 1000
    assert retry["retriable_error_codes"].default == (
        HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.REQUEST_TIMEOUT,
        HTTPStatus.SERVICE_UNAVAILABLE, HTTPStatus.GATEWAY_TIMEOUT,
    )  # fmt: skip
    series = inspect.signature(DicomWebAdapter.retrieveSeriesIntoFolder).parameters
    assert series["useStudySubFolder"].default is True
    assert issubclass(DicomWebAdapter_Fallback, DicomWebAdapter)
    # The fallback is the same adapter with another strategy, not a copy of its code.
    assert set(vars(DicomWebAdapter_Fallback)) <= {"__doc__", "__module__", "_strategy",
                                                   "__annotations__", "__qualname__"}  # fmt: skip


def test_set_http_retry_parameters_maps_onto_the_retry_policy(orthanc):
    with DicomWebAdapter(orthanc.dicomweb_url) as adapter:
        adapter.setHttpRetryParameters()
        assert adapter._client.retry == RetryPolicy(
            max_attempts=5, backoff_multiplier=1.0, retry_statuses=frozenset({429, 408, 503, 504})
        )
        adapter.setHttpRetryParameters(
            max_attempts=2,
            wait_exponential_multiplier=250,
            retriable_error_codes=(HTTPStatus.BAD_GATEWAY,),
        )
        assert adapter._client.retry == RetryPolicy(
            max_attempts=2, backoff_multiplier=0.25, retry_statuses=frozenset({502})
        )
        adapter.setHttpRetryParameters(retry=False, max_attempts=9)
        assert adapter._client.retry is None


def test_get_study_uid_for_series(adapter):
    assert adapter.getStudyInstanceUIDForSeries(ALPHA_MR.series_uid) == ALPHA.study_uid
    assert adapter.getStudyInstanceUIDForSeries("1.2.3.4.5") is None


def test_get_series_uids_for_study(adapter):
    found = adapter.getSeriesInstanceUIDsForStudy(BETA_RLE.study_uid)
    assert sorted(found) == sorted(
        [BETA_MULTIFRAME.series_uid, BETA_RLE.series_uid, BETA_DEFLATED.series_uid]
    )
    assert adapter.getSeriesInstanceUIDsForStudy("1.2.3.4.5") == []


def test_retrieve_series_into_study_subfolder(adapter, orthanc, tmp_path):
    adapter.retrieveSeriesIntoFolder(ALPHA.study_uid, ALPHA.series_uid, str(tmp_path))
    check_series_folder(tmp_path / ALPHA.study_uid / ALPHA.series_uid, orthanc, ALPHA)
    # A second series of the same study goes next to the first.
    adapter.retrieveSeriesIntoFolder(ALPHA.study_uid, ALPHA_MR.series_uid, str(tmp_path))
    check_series_folder(tmp_path / ALPHA.study_uid / ALPHA_MR.series_uid, orthanc, ALPHA_MR)


def test_retrieve_series_without_study_subfolder(adapter, orthanc, tmp_path):
    adapter.retrieveSeriesIntoFolder(
        BETA_RLE.study_uid, BETA_RLE.series_uid, str(tmp_path), useStudySubFolder=False
    )
    assert os.listdir(tmp_path) == [BETA_RLE.series_uid]
    check_series_folder(tmp_path / BETA_RLE.series_uid, orthanc, BETA_RLE)


def test_retrieve_series_os_errors(adapter, tmp_path):
    with pytest.raises(FileNotFoundError) as missing:
        adapter.retrieveSeriesIntoFolder(ALPHA.study_uid, ALPHA.series_uid, str(tmp_path / "no"))
    assert missing.value.filename == str(tmp_path / "no")  # the missing root, by name
    with pytest.raises(FileNotFoundError):
        adapter.retrieveStudyIntoFolder(ALPHA.study_uid, str(tmp_path / "no"))
    assert os.listdir(tmp_path) == []
    (tmp_path / ALPHA.study_uid / ALPHA.series_uid).mkdir(parents=True)
    with pytest.raises(FileExistsError):
        adapter.retrieveSeriesIntoFolder(ALPHA.study_uid, ALPHA.series_uid, str(tmp_path))
    assert os.listdir(tmp_path / ALPHA.study_uid / ALPHA.series_uid) == []


def test_retrieve_unknown_series_is_a_connection_error_leaving_nothing(adapter, tmp_path):
    with pytest.raises(ConnectionError):
        adapter.retrieveSeriesIntoFolder(ALPHA.study_uid, "1.2.3.4.5", str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_retrieve_study_into_folder(adapter, orthanc, tmp_path):
    adapter.retrieveStudyIntoFolder(BETA_RLE.study_uid, str(tmp_path))
    study = tmp_path / BETA_RLE.study_uid
    for spec in (BETA_MULTIFRAME, BETA_RLE, BETA_DEFLATED):
        check_series_folder(study / spec.series_uid, orthanc, spec)
    with pytest.raises(FileExistsError):
        adapter.retrieveStudyIntoFolder(BETA_RLE.study_uid, str(tmp_path))


def test_delete_with_the_orthanc_strategy(orthanc, corpus):
    specs = [SeriesSpec(study=700, series=n, instances=1, rows=16, columns=16) for n in (1, 2)]
    upload_instances(orthanc, [i for spec in specs for i in generate_series(spec)])
    with DicomWebAdapter(orthanc.dicomweb_url, delete_strategy="orthanc") as adapter:
        adapter.deleteSeries(specs[0].study_uid, specs[0].series_uid)
        assert adapter.getSeriesInstanceUIDsForStudy(specs[0].study_uid) == [specs[1].series_uid]
        adapter.deleteStudy(specs[0].study_uid)
    assert orthanc_id(orthanc, specs[0].study_uid, "Study") is None


def test_standard_delete_on_orthanc_is_a_connection_error(adapter):
    with pytest.raises(ConnectionError, match="405"):
        adapter.deleteStudy(ALPHA.study_uid)


def test_store_directory_stores_and_reports_failures(orthanc, tmp_path):
    spec = SeriesSpec(study=701, series=1, instances=3, rows=16, columns=16)
    instances = list(generate_series(spec))
    for n, instance in enumerate(instances):
        (tmp_path / "in" / str(n)).mkdir(parents=True)
        (tmp_path / "in" / str(n) / "x.dcm").write_bytes(instance.data)
    (tmp_path / "in" / "x.txt").write_text("skipped by the regex")
    with DicomWebAdapter(orthanc.dicomweb_url) as adapter:
        adapter.storeDirectory(str(tmp_path / "in"), include_regex=r"\.dcm$")
        for instance in instances:
            assert stored_bytes(orthanc, instance.sop_instance_uid) == instance.data
        bad = tmp_path / "in" / "3"
        bad.mkdir()
        (bad / "bad.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage, not a dataset")
        with pytest.raises(StoreFailedError, match=r"bad\.dcm") as caught:
            adapter.storeDirectory(str(tmp_path / "in"))
    assert isinstance(caught.value, ConnectionError)


def test_username_and_password_against_the_auth_orthanc(orthanc_auth, corpus_auth, tmp_path):
    with DicomWebAdapter(orthanc_auth.dicomweb_url, username=AUTH_USER,
                         password=AUTH_PASSWORD) as adapter:  # fmt: skip
        adapter.retrieveSeriesIntoFolder(ALPHA.study_uid, ALPHA.series_uid, str(tmp_path))
    check_series_folder(tmp_path / ALPHA.study_uid / ALPHA.series_uid, orthanc_auth, ALPHA)
    with DicomWebAdapter(orthanc_auth.dicomweb_url, username=AUTH_USER,
                         password="wrong") as adapter:  # fmt: skip
        with pytest.raises(ConnectionError, match="401") as caught:
            adapter.getSeriesInstanceUIDsForStudy(ALPHA.study_uid)
    assert "wrong" not in str(caught.value)


def test_requests_session_basic_auth_carries_over(orthanc_auth, corpus_auth):
    session = requests.Session()
    session.auth = (AUTH_USER, AUTH_PASSWORD)
    with DicomWebAdapter(orthanc_auth.dicomweb_url, session=session) as adapter:
        assert adapter.getStudyInstanceUIDForSeries(ALPHA.series_uid) == ALPHA.study_uid


def test_requests_session_headers_cookies_and_proxy_carry_over():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[])

    session = requests.Session()
    session.headers["X-Site"] = "radiology"
    session.cookies.set("sid", "abc123")
    session.auth = requests.auth.HTTPBasicAuth("u", "p")
    with DicomWebAdapter("http://pacs.test/dw", session=session,
                         transport=httpx.MockTransport(handler)) as adapter:  # fmt: skip
        assert adapter.getSeriesInstanceUIDsForStudy("1.2.3") == []
    (request,) = seen
    assert request.headers["X-Site"] == "radiology"
    assert "sid=abc123" in request.headers["Cookie"]
    assert request.headers["Authorization"].startswith("Basic ")


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        pytest.param(lambda s: setattr(s, "auth", requests.auth.HTTPDigestAuth("u", "p")),
                     "HTTPDigestAuth", id="digest-auth"),
        pytest.param(lambda s: s.hooks["response"].append(lambda r, **kw: r), "hooks",
                     id="hooks"),
        pytest.param(lambda s: s.params.update({"key": "v"}), "params", id="params"),
    ],
)  # fmt: skip
def test_requests_session_settings_that_cannot_carry_over_are_type_errors(setup, message):
    session = requests.Session()
    setup(session)
    with pytest.raises(TypeError, match=message):
        DicomWebAdapter("http://pacs.test/dw", session=session)


def test_legacy_additional_parameters_are_accepted_and_unknown_ones_refused():
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json=[])

    with DicomWebAdapter(
        "http://pacs.test/dw", headers={"X-A": "1"}, qido_url_prefix="qido",
        wado_url_prefix="wado", stow_url_prefix="stow", delete_url_prefix="del",
        proxies={"https": "http://proxy.test:3128"}, chunk_size=65536,
        transport=httpx.MockTransport(handler),
    ) as adapter:  # fmt: skip
        adapter.getSeriesInstanceUIDsForStudy("1.2.3")
    assert seen == ["/dw/qido/studies/1.2.3/series"]
    with pytest.raises(TypeError, match="no_such_option"):
        DicomWebAdapter("http://pacs.test/dw", no_such_option=True)


def test_server_that_is_down_is_a_connection_error():
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    with DicomWebAdapter(url) as adapter:
        adapter.setHttpRetryParameters(retry=False)
        with pytest.raises(ConnectionError):
            adapter.getSeriesInstanceUIDsForStudy(ALPHA.study_uid)
