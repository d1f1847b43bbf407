"""HTTPS and proxies against the real Orthanc: nginx as its TLS front, a forward proxy.

GETs to an https origin take the fast path (TLS over a non-blocking socket), with
httpx's TLS semantics; requests through a proxy, and every POST or DELETE, take
httpx's own transport with the same TLS context.
"""

from __future__ import annotations

import ssl
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpcore
import pytest

from aiodicomweb import (
    AsyncDicomWebClient,
    DicomWebClient,
    DicomWebHTTPError,
    DicomWebTransportError,
)
from tests.support.certs import Certificates
from tests.support.corpus import Corpus, stored_bytes
from tests.support.dicomgen import TEST_CORPUS, SeriesSpec, generate_series
from tests.support.orthanc import OrthancServer
from tests.support.proxy import ForwardProxy
from tests.support.tls import TlsFront

pytestmark = [pytest.mark.anyio, pytest.mark.orthanc]

SPEC = TEST_CORPUS[0]
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
CA_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy or CA variable from the machine running the tests."""
    for name in PROXY_VARIABLES + CA_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def httpx_requests(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The requests that reach httpx's own connection pool (not the fast path)."""
    seen: list[str] = []
    original = httpcore.AsyncConnectionPool.handle_async_request

    async def spy(self: Any, request: httpcore.Request) -> Any:
        seen.append(f"{request.method.decode()} {request.url.scheme.decode()}")
        return await original(self, request)

    monkeypatch.setattr(httpcore.AsyncConnectionPool, "handle_async_request", spy)
    yield seen


def assert_byte_exact(folder: Path, orthanc: OrthancServer) -> None:
    import pydicom

    files = sorted(folder.iterdir())
    assert len(files) == SPEC.instances
    for path in files:
        sop = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert path.read_bytes() == stored_bytes(orthanc, sop)


# -- the fast path over TLS ---------------------------------------------------------


@pytest.mark.parametrize("strategy", ["multipart", "per_instance"])
async def test_https_series_download_is_byte_exact_on_the_fast_path(
    orthanc: OrthancServer,
    orthanc_https: TlsFront,
    corpus: Corpus,
    certificates: Certificates,
    httpx_requests: list[str],
    tmp_path: Path,
    strategy: str,
) -> None:
    async with AsyncDicomWebClient(orthanc_https.dicomweb_url, verify=certificates.ca) as client:
        result = await client.download_series(
            SPEC.study_uid,
            SPEC.series_uid,
            tmp_path / "out",
            strategy=strategy,  # type: ignore[arg-type]
        )
    assert result.instances == SPEC.instances
    assert_byte_exact(tmp_path / "out", orthanc)
    assert httpx_requests == []  # every GET went on the fast path


async def test_https_searches_reuse_one_connection_and_match_plain_http(
    orthanc: OrthancServer,
    orthanc_https: TlsFront,
    corpus: Corpus,
    certificates: Certificates,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handshakes: list[str] = []

    def counting(wrap: Any) -> Any:
        def counted(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> Any:
            handshakes.append(kwargs.get("server_hostname", ""))
            return wrap(self, *args, **kwargs)

        return counted

    async with AsyncDicomWebClient(orthanc.dicomweb_url) as plain:
        expected = without_urls(await plain.search_series(SPEC.study_uid))
    context = ssl.create_default_context(cafile=str(certificates.ca))
    for wrap in ("wrap_socket", "wrap_bio"):  # TLS over a socket or over memory buffers
        monkeypatch.setattr(ssl.SSLContext, wrap, counting(getattr(ssl.SSLContext, wrap)))
    async with AsyncDicomWebClient(orthanc_https.dicomweb_url, verify=context) as client:
        for _ in range(3):
            assert without_urls(await client.search_series(SPEC.study_uid)) == expected
        metadata = await client.retrieve_series_metadata(SPEC.study_uid, SPEC.series_uid)
    assert len(metadata) == SPEC.instances
    assert handshakes == ["127.0.0.1"]  # one connection, kept alive, SNI as the URL names it


def without_urls(datasets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """DICOM JSON without RetrieveURL (0008,1190), which names the scheme it was asked by."""
    return [{tag: value for tag, value in d.items() if tag != "00081190"} for d in datasets]


def test_the_sync_client_speaks_https(
    orthanc_https: TlsFront, corpus: Corpus, certificates: Certificates
) -> None:
    with DicomWebClient(orthanc_https.dicomweb_url, verify=str(certificates.ca)) as client:
        assert SPEC.series_uid in client.list_series_uids(SPEC.study_uid)


async def test_store_and_delete_over_https_use_the_same_tls_settings(
    orthanc_https: TlsFront, orthanc: OrthancServer, certificates: Certificates
) -> None:
    instance = next(iter(generate_series(SeriesSpec(study=7301, series=1, instances=1))))
    async with AsyncDicomWebClient(
        orthanc_https.dicomweb_url, verify=certificates.ca, delete_strategy="orthanc"
    ) as client:
        result = await client.store([instance.data])
        assert result.ok and len(result.stored) == 1
        study = instance.study_uid
        assert await client.search_studies({"StudyInstanceUID": study})
        await client.delete_study(study)
        assert await client.search_studies({"StudyInstanceUID": study}) == []


# -- verification, as httpx does it -------------------------------------------------


@pytest.mark.parametrize(
    "variable", ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"], ids=["ssl-cert-file", "requests-bundle"]
)
async def test_ca_bundles_from_the_environment_are_trusted_only_with_trust_env(
    orthanc_https: TlsFront,
    certificates: Certificates,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
) -> None:
    monkeypatch.setenv(variable, str(certificates.ca))
    async with AsyncDicomWebClient(orthanc_https.dicomweb_url, retry=None) as client:
        assert isinstance(await client.search_studies(), list)
    async with AsyncDicomWebClient(
        orthanc_https.dicomweb_url, retry=None, trust_env=False
    ) as client:
        with pytest.raises(DicomWebTransportError, match="certificate"):
            await client.search_studies()


async def test_a_server_signed_by_an_unknown_ca_is_refused_unless_verify_is_off(
    https_self_signed: TlsFront, certificates: Certificates
) -> None:
    for verify in (True, certificates.ca):
        async with AsyncDicomWebClient(
            https_self_signed.dicomweb_url, verify=verify, retry=None
        ) as client:
            with pytest.raises(DicomWebTransportError, match="certificate verify failed"):
                await client.search_studies()
    async with AsyncDicomWebClient(https_self_signed.dicomweb_url, verify=False) as client:
        assert isinstance(await client.search_studies(), list)


async def test_a_certificate_for_another_host_is_refused_by_the_hostname_check(
    https_wrong_host: TlsFront, certificates: Certificates
) -> None:
    async with AsyncDicomWebClient(
        https_wrong_host.dicomweb_url, verify=certificates.ca, retry=None
    ) as client:
        with pytest.raises(DicomWebTransportError, match=r"match|mismatch"):
            await client.search_studies()
        with pytest.raises(DicomWebTransportError, match=r"match|mismatch"):
            await client.store([b"DICM"])  # httpx's transport checks the same way


async def test_mutual_tls_serves_only_a_client_with_its_certificate(
    https_mtls: TlsFront, certificates: Certificates
) -> None:
    async with AsyncDicomWebClient(
        https_mtls.dicomweb_url, verify=certificates.ca, retry=None
    ) as client:
        with pytest.raises(DicomWebHTTPError) as refused:
            await client.search_studies()
    assert refused.value.status == 400
    client_pem = str(certificates.client)
    for cert in (client_pem, (client_pem, client_pem)):
        async with AsyncDicomWebClient(
            https_mtls.dicomweb_url, verify=certificates.ca, cert=cert
        ) as client:
            assert isinstance(await client.search_studies(), list)


async def test_tls_options_raise_no_httpx_deprecation_warning(
    https_mtls: TlsFront, certificates: Certificates
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        async with AsyncDicomWebClient(
            https_mtls.dicomweb_url, verify=str(certificates.ca), cert=str(certificates.client)
        ) as client:
            await client.search_studies()
            result = await client.store([b"not dicom"])
    assert not result.ok


# -- proxies -------------------------------------------------------------------------


async def test_environment_proxy_carries_plain_http_requests(
    orthanc: OrthancServer,
    corpus: Corpus,
    forward_proxy: ForwardProxy,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    async with AsyncDicomWebClient(orthanc.dicomweb_url) as client:
        assert await client.search_series(SPEC.study_uid)
        await client.download_series(SPEC.study_uid, SPEC.series_uid, tmp_path / "out")
    assert_byte_exact(tmp_path / "out", orthanc)
    lines = forward_proxy.requests
    assert f"GET {orthanc.dicomweb_url}/studies/{SPEC.study_uid}/series HTTP/1.1" in lines
    assert any(line.endswith(f"/series/{SPEC.series_uid} HTTP/1.1") for line in lines)


async def test_environment_proxy_tunnels_https_with_connect(
    orthanc_https: TlsFront,
    corpus: Corpus,
    certificates: Certificates,
    forward_proxy: ForwardProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", forward_proxy.url)
    async with AsyncDicomWebClient(orthanc_https.dicomweb_url, verify=certificates.ca) as client:
        assert await client.search_series(SPEC.study_uid)
    assert forward_proxy.requests == [f"CONNECT 127.0.0.1:{orthanc_https.port} HTTP/1.1"]


@pytest.mark.parametrize(
    "setting",
    [
        pytest.param({"env": {"NO_PROXY": "127.0.0.1"}}, id="no-proxy-host"),
        pytest.param({"env": {"NO_PROXY": "*"}}, id="no-proxy-star"),
        pytest.param({"trust_env": False}, id="trust-env-off"),
    ],
)
async def test_environment_proxy_is_skipped_as_httpx_skips_it(
    orthanc: OrthancServer,
    corpus: Corpus,
    forward_proxy: ForwardProxy,
    monkeypatch: pytest.MonkeyPatch,
    setting: dict[str, Any],
) -> None:
    monkeypatch.setenv("ALL_PROXY", forward_proxy.url)
    for name, value in setting.get("env", {}).items():
        monkeypatch.setenv(name, value)
    options = {"trust_env": setting["trust_env"]} if "trust_env" in setting else {}
    async with AsyncDicomWebClient(orthanc.dicomweb_url, **options) as client:
        assert await client.search_series(SPEC.study_uid)
    assert forward_proxy.requests == []


async def test_an_explicit_proxy_carries_every_request(
    orthanc: OrthancServer, corpus: Corpus, forward_proxy: ForwardProxy
) -> None:
    async with AsyncDicomWebClient(orthanc.dicomweb_url, proxy=forward_proxy.url) as client:
        assert await client.search_series(SPEC.study_uid)
    assert forward_proxy.requests == [
        f"GET {orthanc.dicomweb_url}/studies/{SPEC.study_uid}/series HTTP/1.1"
    ]
