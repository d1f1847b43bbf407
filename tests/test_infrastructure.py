"""Smoke tests that prove the test infrastructure itself: Orthanc, auth, corpus, the
nginx TLS fronts and forward proxy of the HTTPS tests (standard library clients only),
and the Orthanc lookup and install script that the fixtures, nox and the demo share.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import AUTH_PASSWORD, AUTH_USER
from tests.support import orthanc as orthanc_support
from tests.support.certs import Certificates
from tests.support.corpus import Corpus, orthanc_id, stored_bytes
from tests.support.dicomgen import TEST_CORPUS
from tests.support.orthanc import (
    OrthancServer,
    OrthancSettingError,
    OrthancUnavailableError,
    find_orthanc,
)
from tests.support.proxy import ForwardProxy
from tests.support.tls import NginxUnavailableError, TlsFront

ROOT = Path(__file__).resolve().parents[1]


def _get_json(url: str, headers: dict[str, str] | None = None) -> object:
    request = urllib.request.Request(url, headers={"Accept": "application/dicom+json"})
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"[]")


def test_orthanc_answers_qido_for_every_uploaded_study(orthanc: OrthancServer, corpus: Corpus):
    studies = _get_json(f"{orthanc.dicomweb_url}/studies")
    assert isinstance(studies, list)
    found = {study["0020000D"]["Value"][0] for study in studies}
    # Other tests add studies of their own to the same server; the corpus must be there.
    assert set(corpus.study_uids) <= found


def test_orthanc_lists_series_with_their_instance_counts(orthanc: OrthancServer, corpus: Corpus):
    for spec in TEST_CORPUS:
        url = f"{orthanc.dicomweb_url}/studies/{spec.study_uid}/series/{spec.series_uid}/instances"
        instances = _get_json(url)
        assert isinstance(instances, list)
        assert len(instances) == spec.instances == len(corpus.series(spec.series_uid))


def test_stored_bytes_are_the_uploaded_bytes(orthanc: OrthancServer, corpus: Corpus):
    for instance in corpus.instances:
        assert stored_bytes(orthanc, instance.sop_instance_uid) == instance.data


def test_corpus_has_multiframe_and_compressed_instances(corpus: Corpus):
    syntaxes = {instance.transfer_syntax for instance in corpus.instances}
    assert "1.2.840.10008.1.2.5" in syntaxes  # RLE Lossless
    assert "1.2.840.10008.1.2.1.99" in syntaxes  # Deflated Explicit VR Little Endian
    assert any(spec.frames > 1 for spec in TEST_CORPUS)


def test_auth_orthanc_refuses_requests_without_credentials(orthanc_auth: OrthancServer):
    with pytest.raises(urllib.error.HTTPError) as caught:
        _get_json(f"{orthanc_auth.dicomweb_url}/studies")
    caught.value.close()  # the error holds the connection open
    assert caught.value.code == 401


def test_auth_orthanc_accepts_its_credentials(orthanc_auth: OrthancServer, corpus_auth: Corpus):
    token = base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()
    studies = _get_json(
        f"{orthanc_auth.dicomweb_url}/studies", {"Authorization": f"Basic {token}"}
    )
    assert isinstance(studies, list)
    assert {s["0020000D"]["Value"][0] for s in studies} == set(corpus_auth.study_uids)


def test_orthanc_fixture_listens_on_loopback_only_config(orthanc: OrthancServer):
    config = json.loads((orthanc.workdir / "orthanc.json").read_text())
    assert config["RemoteAccessAllowed"] is False
    assert config["DicomServerEnabled"] is False
    assert orthanc.root.startswith("http://127.0.0.1:")


# TLS fronts -------------------------------------------------------------------------


def _trusting_our_ca(certificates: Certificates) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificates.ca))


def _get(url: str, context: ssl.SSLContext) -> bytes:
    with urllib.request.urlopen(url, context=context, timeout=30) as response:
        assert response.status == 200
        return bytes(response.read())


def _verification_error(url: str, context: ssl.SSLContext) -> ssl.SSLCertVerificationError:
    with pytest.raises(urllib.error.URLError) as caught:
        _get(url, context)
    assert isinstance(caught.value.reason, ssl.SSLCertVerificationError)
    return caught.value.reason


def test_https_front_serves_orthanc_to_a_client_trusting_our_ca(
    orthanc_https: TlsFront, certificates: Certificates, corpus: Corpus
):
    context = _trusting_our_ca(certificates)
    system = json.loads(_get(f"{orthanc_https.url}/system", context))
    assert system["Name"] == "aiodicomweb-test"
    studies = json.loads(_get(f"{orthanc_https.dicomweb_url}/studies", context))
    assert set(corpus.study_uids) <= {study["0020000D"]["Value"][0] for study in studies}
    assert orthanc_https.url == f"https://127.0.0.1:{orthanc_https.port}"
    assert orthanc_https.dicomweb_url == orthanc_https.url + "/dicom-web"


def test_https_front_speaks_tls_1_2_and_1_3(orthanc_https: TlsFront, certificates: Certificates):
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = _trusting_our_ca(certificates)
        context.minimum_version = context.maximum_version = version
        with socket.create_connection(("127.0.0.1", orthanc_https.port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.version() == version.name.replace("_", ".")


def _alpn(front: TlsFront, certificates: Certificates) -> str | None:
    context = _trusting_our_ca(certificates)
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", front.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.selected_alpn_protocol()


def test_https_front_offers_http2_only_when_asked(
    orthanc: OrthancServer, orthanc_https: TlsFront, certificates: Certificates
):
    assert _alpn(orthanc_https, certificates) == "http/1.1"
    with TlsFront(orthanc.root, certificates.server, http2=True) as front:
        assert _alpn(front, certificates) == "h2"


def test_https_front_bulkdata_uris_point_back_at_the_front(
    orthanc_https: TlsFront, certificates: Certificates, corpus: Corpus
):
    # Reached as `localhost`, to prove the client's Host reaches Orthanc unchanged.
    spec = TEST_CORPUS[0]
    front = f"https://localhost:{orthanc_https.port}"
    url = f"{front}/dicom-web/studies/{spec.study_uid}/series/{spec.series_uid}/metadata"
    instances = json.loads(_get(url, _trusting_our_ca(certificates)))
    uris = [
        element["BulkDataURI"]
        for instance in instances
        for element in instance.values()
        if "BulkDataURI" in element
    ]
    assert len(uris) >= len(instances) == spec.instances
    assert all(uri.startswith(f"{front}/dicom-web/studies/") for uri in uris)


def test_https_front_is_refused_by_a_client_trusting_only_the_system_cas(
    orthanc_https: TlsFront,
):
    error = _verification_error(f"{orthanc_https.url}/system", ssl.create_default_context())
    assert error.verify_message == "unable to get local issuer certificate"


def test_wrong_host_front_fails_the_hostname_check_only(
    https_wrong_host: TlsFront, certificates: Certificates
):
    url = f"{https_wrong_host.url}/system"
    error = _verification_error(url, _trusting_our_ca(certificates))
    assert "mismatch" in error.verify_message
    lenient = _trusting_our_ca(certificates)
    lenient.check_hostname = False
    assert json.loads(_get(url, lenient))["Name"] == "aiodicomweb-test"


def test_self_signed_front_is_refused_by_a_client_trusting_our_ca(
    https_self_signed: TlsFront, certificates: Certificates
):
    error = _verification_error(f"{https_self_signed.url}/system", _trusting_our_ca(certificates))
    assert error.verify_message == "unable to get local issuer certificate"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_mtls_front_answers_400_to_a_client_without_certificate(
    https_mtls: TlsFront, certificates: Certificates, version: ssl.TLSVersion
):
    # nginx asks for a certificate but lets the handshake finish without one; the
    # refusal is an HTTP answer, not a TLS alert.
    context = _trusting_our_ca(certificates)
    context.maximum_version = version
    with pytest.raises(urllib.error.HTTPError) as caught:
        _get(f"{https_mtls.url}/system", context)
    with caught.value as error:  # the error holds the connection open
        body = error.read()
    assert error.code == 400
    assert b"No required SSL certificate was sent" in body


def test_mtls_front_serves_a_client_with_a_certificate_from_our_ca(
    https_mtls: TlsFront, certificates: Certificates
):
    context = _trusting_our_ca(certificates)
    context.load_cert_chain(str(certificates.client))
    assert json.loads(_get(f"{https_mtls.url}/system", context))["Name"] == "aiodicomweb-test"


def _processes_mentioning(text: str) -> list[int]:
    """Process ids whose command line contains `text` (Linux /proc)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            pass  # the process ended while we looked
    return pids


def test_tls_front_stop_reaps_nginx_and_removes_its_folder(
    orthanc: OrthancServer, certificates: Certificates
):
    front = TlsFront(orthanc.root, certificates.server).start()
    pid, workdir, port = front.pid, front.workdir, front.port
    assert pid is not None
    assert _processes_mentioning(str(workdir)) == [pid]
    # An open keep-alive connection must not hold the shutdown up.
    connection = http.client.HTTPSConnection(
        "127.0.0.1", port, context=_trusting_our_ca(certificates), timeout=10
    )
    connection.request("GET", "/system")
    assert connection.getresponse().read()
    started = time.monotonic()
    front.stop()
    assert time.monotonic() - started < 5
    connection.close()
    assert front.pid is None
    assert not Path(f"/proc/{pid}").exists()
    assert _processes_mentioning(str(workdir)) == []
    assert not workdir.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    front.stop()  # idempotent


def test_tls_front_reports_a_missing_nginx_with_the_install_hint(
    orthanc: OrthancServer,
    certificates: Certificates,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("NGINX_BIN", str(tmp_path / "no-such-nginx"))
    front = TlsFront(orthanc.root, certificates.server)
    with pytest.raises(NginxUnavailableError, match=re.escape("scripts/install-orthanc.sh")):
        front.start()
    assert not front.workdir.exists()


def test_tls_front_fails_loudly_with_the_nginx_error_log(orthanc: OrthancServer, tmp_path: Path):
    front = TlsFront(orthanc.root, tmp_path / "missing.pem")
    with pytest.raises(NginxUnavailableError, match="exited") as caught:
        front.start()
    assert "cannot load certificate" in str(caught.value)
    assert front.pid is None
    assert not front.workdir.exists()


# Forward proxy ----------------------------------------------------------------------


@pytest.fixture
def _proxy_for_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop urllib from bypassing the proxy for loopback because of a no_proxy setting."""
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)


def _opener_via(
    proxy: ForwardProxy, context: ssl.SSLContext | None = None
) -> urllib.request.OpenerDirector:
    handlers: list[urllib.request.BaseHandler] = [
        urllib.request.ProxyHandler({"http": proxy.url, "https": proxy.url})
    ]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)


@pytest.mark.usefixtures("_proxy_for_loopback")
def test_forward_proxy_relays_plain_http_and_records_the_request_line(
    forward_proxy: ForwardProxy, orthanc: OrthancServer, corpus: Corpus
):
    url = f"{orthanc.dicomweb_url}/studies"
    request = urllib.request.Request(url, headers={"Accept": "application/dicom+json"})
    with _opener_via(forward_proxy).open(request, timeout=30) as response:
        assert response.headers["Connection"] == "close"
        studies = json.loads(response.read())
    assert set(corpus.study_uids) <= {study["0020000D"]["Value"][0] for study in studies}
    assert forward_proxy.requests == [f"GET {url} HTTP/1.1"]
    assert forward_proxy.url == f"http://127.0.0.1:{forward_proxy.port}"


def test_forward_proxy_relays_request_bodies(
    forward_proxy: ForwardProxy, orthanc: OrthancServer, corpus: Corpus
):
    uid = corpus.instances[0].sop_instance_uid
    url = f"{orthanc.root}/tools/lookup"
    # Once with Content-Length, once chunked: both framings must reach Orthanc intact.
    for body, chunked in (
        (uid.encode(), False),
        (iter([uid[:5].encode(), uid[5:].encode()]), True),
    ):
        connection = http.client.HTTPConnection("127.0.0.1", forward_proxy.port, timeout=30)
        connection.request("POST", url, body=body, encode_chunked=chunked)
        response = connection.getresponse()
        matches = json.loads(response.read())
        connection.close()
        assert response.status == 200
        assert [match["Type"] for match in matches] == ["Instance"]
    assert forward_proxy.requests == [f"POST {url} HTTP/1.1"] * 2


@pytest.mark.usefixtures("_proxy_for_loopback")
def test_forward_proxy_tunnels_https_through_connect_and_records_it(
    forward_proxy: ForwardProxy,
    orthanc: OrthancServer,
    orthanc_https: TlsFront,
    certificates: Certificates,
    corpus: Corpus,
):
    # The largest instance, so the tunnel carries many TLS records, not one.
    instance = max(corpus.instances, key=lambda item: len(item.data))
    instance_id = orthanc_id(orthanc, instance.sop_instance_uid, "Instance")
    opener = _opener_via(forward_proxy, _trusting_our_ca(certificates))
    with opener.open(f"{orthanc_https.url}/instances/{instance_id}/file", timeout=30) as response:
        assert response.read() == instance.data
    (line,) = forward_proxy.requests
    # urllib sends HTTP/1.0 CONNECT lines before Python 3.12, HTTP/1.1 after.
    assert re.fullmatch(rf"CONNECT 127\.0\.0\.1:{orthanc_https.port} HTTP/1\.[01]", line)


def test_forward_proxy_relays_close_delimited_bodies_in_origin_form(
    forward_proxy: ForwardProxy,
):
    # A scripted origin: no Content-Length, the body ends when the connection does.
    body = bytes(range(256)) * 4096
    received: list[bytes] = []
    with socket.create_server(("127.0.0.1", 0)) as origin:
        origin.settimeout(10)

        def answer_once() -> None:
            connection, _ = origin.accept()
            with connection:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += connection.recv(4096)
                received.append(head)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: x-test/bytes\r\n\r\n" + body)

        server = threading.Thread(target=answer_once)
        server.start()
        url = f"http://127.0.0.1:{origin.getsockname()[1]}/close/delimited?x=1"
        connection = http.client.HTTPConnection("127.0.0.1", forward_proxy.port, timeout=10)
        connection.request("GET", url, headers={"Proxy-Connection": "keep-alive"})
        response = connection.getresponse()
        assert response.status == 200
        assert response.read() == body
        connection.close()
        server.join(10)
    (head,) = received
    lines = head.decode().split("\r\n")
    assert lines[0] == "GET /close/delimited?x=1 HTTP/1.1"
    assert "Connection: close" in lines
    assert not any(line.lower().startswith("proxy-connection") for line in lines)


def test_forward_proxy_answers_errors_it_can_explain(forward_proxy: ForwardProxy):
    connection = http.client.HTTPConnection("127.0.0.1", forward_proxy.port, timeout=10)
    connection.request("GET", "/origin-form/is/not/for/proxies")
    assert connection.getresponse().status == 400
    connection.close()
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    connection = http.client.HTTPConnection("127.0.0.1", forward_proxy.port, timeout=10)
    connection.request("GET", f"http://127.0.0.1:{closed_port}/")
    assert connection.getresponse().status == 502
    connection.close()


def test_forward_proxy_stop_cuts_open_tunnels_and_joins_its_threads(orthanc_https: TlsFront):
    proxy = ForwardProxy().start()
    tunnel = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    target = f"127.0.0.1:{orthanc_https.port}"
    tunnel.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    assert tunnel.recv(1024).startswith(b"HTTP/1.1 200 ")
    idle = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    deadline = time.monotonic() + 5
    while len(proxy.threads) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(proxy.threads) == 3  # acceptor, tunnel, idle connection
    started = time.monotonic()
    proxy.stop()
    assert time.monotonic() - started < 5
    assert proxy.threads == []
    assert tunnel.recv(1024) == b""
    assert idle.recv(1024) == b""
    tunnel.close()
    idle.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=5).close()


# The Orthanc lookup and scripts/install-orthanc.sh ---------------------------------


@pytest.fixture
def no_installed_orthanc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without Orthanc: nothing on PATH, nothing in the Debian places."""
    for name in ("ORTHANC_BIN", "ORTHANC_DICOMWEB_PLUGIN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    monkeypatch.setattr(orthanc_support, "DEBIAN_BINARY", str(tmp_path / "no-Orthanc"))
    monkeypatch.setattr(orthanc_support, "DEBIAN_PLUGIN_DIRS", (str(tmp_path / "no-plugins"),))


def _assert_readable(message: str) -> None:
    """No sentence twice, no doubled full stop, no traceback."""
    sentences = [part.strip() for part in message.split(". ") if part.strip()]
    assert len(sentences) == len(set(sentences))
    assert ".." not in message
    assert "Traceback" not in message


@pytest.mark.usefixtures("no_installed_orthanc")
@pytest.mark.parametrize("purpose", ["the demo", "the tests"])
def test_missing_orthanc_is_reported_once_for_whoever_asked(purpose: str):
    with pytest.raises(OrthancUnavailableError) as caught:
        find_orthanc(purpose)
    message = str(caught.value)
    assert not isinstance(caught.value, OrthancSettingError)  # installing would help
    assert message.startswith(
        f"Orthanc with its DICOMweb plugin is needed for {purpose}, and Orthanc is not installed"
    )
    assert "`sudo scripts/install-orthanc.sh`" in message
    assert "integration" not in message
    assert message.count("needed") == 1
    _assert_readable(message)


@pytest.mark.usefixtures("no_installed_orthanc")
def test_missing_plugin_is_reported_with_the_places_looked_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("ORTHANC_BIN", shutil.which("true") or "/bin/true")
    with pytest.raises(OrthancUnavailableError, match="the plugin is not installed") as caught:
        find_orthanc("the demo")
    assert str(tmp_path / "no-plugins") in str(caught.value)
    _assert_readable(str(caught.value))


@pytest.mark.parametrize(
    ("variable", "name", "complaint"),
    [
        ("ORTHANC_BIN", "missing/Orthanc", "is not an executable file"),
        ("ORTHANC_BIN", "not-executable", "is not an executable file"),
        ("ORTHANC_DICOMWEB_PLUGIN", "missing/libOrthancDicomWeb.so", "does not exist"),
    ],
)
def test_a_bad_variable_is_refused_before_anything_starts(
    variable: str, name: str, complaint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    (tmp_path / "not-executable").write_text("#!/bin/sh\n")
    value = str(tmp_path / name)
    monkeypatch.delenv("ORTHANC_BIN", raising=False)
    monkeypatch.setenv(variable, value)
    server = OrthancServer(purpose="the demo")
    with pytest.raises(OrthancSettingError) as caught:
        server.start()
    message = str(caught.value)
    assert message.startswith(f"{variable}={value} {complaint}. ")
    assert "for the demo" in message
    _assert_readable(message)
    assert server.process is None
    assert not server.workdir.exists()


def test_an_executable_that_is_not_orthanc_is_named_when_it_exits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    plugin = tmp_path / "libOrthancDicomWeb.so"
    plugin.write_bytes(b"")
    monkeypatch.setenv("ORTHANC_BIN", shutil.which("true") or "/bin/true")
    monkeypatch.setenv("ORTHANC_DICOMWEB_PLUGIN", str(plugin))
    server = OrthancServer()
    with pytest.raises(
        OrthancUnavailableError, match="exited with status 0 before answering"
    ) as caught:
        server.start()
    assert f"ORTHANC_BIN={os.environ['ORTHANC_BIN']}" in str(caught.value)
    assert f"ORTHANC_DICOMWEB_PLUGIN={plugin}" in str(caught.value)
    assert server.process is None
    assert not server.workdir.exists()


@pytest.mark.orthanc
def test_a_file_that_is_no_plugin_is_named_when_orthanc_exits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    plugin = tmp_path / "libOrthancDicomWeb.so"
    plugin.write_text("not a shared library")
    monkeypatch.setenv("ORTHANC_DICOMWEB_PLUGIN", str(plugin))
    server = OrthancServer()
    with pytest.raises(OrthancUnavailableError, match="exited with status") as caught:
        server.start()
    assert f"ORTHANC_DICOMWEB_PLUGIN={plugin}" in str(caught.value)
    assert server.process is None
    assert not server.workdir.exists()


@pytest.mark.orthanc
def test_orthanc_running_without_the_dicomweb_plugin_is_stopped_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # A folder of plugins holding none: Orthanc starts, without DICOMweb.
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    monkeypatch.setenv("ORTHANC_DICOMWEB_PLUGIN", str(plugins))
    server = OrthancServer(purpose="the demo")
    with pytest.raises(OrthancUnavailableError) as caught:
        server.start()
    message = str(caught.value)
    assert message.startswith(
        f"Orthanc started without its DICOMweb plugin: ORTHANC_DICOMWEB_PLUGIN={plugins} "
        "did not load as one (plugins loaded: "
    )
    _assert_readable(message)
    assert server.process is None
    assert _processes_mentioning(str(server.workdir)) == []
    assert not server.workdir.exists()


def _fake_orthanc(folder: Path) -> Path:
    """A long sleep whose process name is Orthanc, as `pgrep -x Orthanc` sees it."""
    folder.mkdir()
    fake = folder / "Orthanc"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", fake)
    return fake


def _alive(pid: int) -> bool:
    """Running, as opposed to ended (a zombie nobody reaped counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.parametrize("service_was_running", [False, True])
def test_install_script_stops_only_a_service_the_install_started(
    tmp_path: Path, service_was_running: bool
):
    # A scratch root, and stubs for what the script asks of the system: apt-get "installs"
    # by starting the Orthanc service, as a permissive policy-rc.d would let it.
    root, stubs = tmp_path / "root", tmp_path / "stubs"
    (root / "usr" / "sbin").mkdir(parents=True)
    (root / "run").mkdir()
    stubs.mkdir()
    fake = _fake_orthanc(tmp_path / "orthanc")
    pid_file = root / "run" / "orthanc.pid"
    scripts = {
        "id": "echo 0",
        "dpkg": "exit 1",
        "dpkg-query": "echo 1.0",
        "apt-get": (
            f'[ "$1" = install ] && [ ! -s {pid_file} ] || exit 0\n'
            f"{fake} 600 </dev/null >/dev/null 2>&1 &\n"
            f"echo $! >{pid_file}"
        ),
    }
    for name, body in scripts.items():
        (stubs / name).write_text(f"#!/bin/sh\n{body}\n")
        (stubs / name).chmod(0o755)
    users_own = subprocess.Popen([fake, "600"])
    service_before = subprocess.Popen([fake, "600"]) if service_was_running else None
    if service_before is not None:
        pid_file.write_text(f"{service_before.pid}\n")
    try:
        result = subprocess.run(
            ["bash", str(ROOT / "scripts" / "install-orthanc.sh")],
            env={
                **os.environ,
                "PATH": f"{stubs}:/usr/bin:/bin",
                "INSTALL_ORTHANC_TEST_ROOT": str(root),
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        service = int(pid_file.read_text())
        assert _alive(users_own.pid)
        if service_before is not None:
            assert service == service_before.pid
            assert _alive(service)
            assert "stopping" not in result.stdout
        else:
            assert not _alive(service)
            assert f"stopping the orthanc service the install started (pid {service})" in (
                result.stdout
            )
        assert not (root / "usr" / "sbin" / "policy-rc.d").exists()
    finally:
        for process in (users_own, service_before):
            if process is not None:
                process.kill()
                process.wait()


class _SessionError(Exception):
    """What `session.error` raises in nox."""


class _Session:
    """The part of a nox session that the Orthanc check uses."""

    def log(self, *args: object) -> None:
        pass

    def error(self, message: str) -> None:
        raise _SessionError(message)


def _nox_refusal(purpose: str, *, nginx: bool) -> str:
    noxfile = pytest.importorskip("noxfile")  # needs nox itself
    with pytest.raises(_SessionError) as caught:
        noxfile.ensure_servers(_Session(), purpose, nginx=nginx)
    message = str(caught.value)
    assert not message.endswith(".")  # nox adds its own
    _assert_readable(message + ".")
    return message


@pytest.fixture
def not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """nox's check as an ordinary user (as root it would install Orthanc)."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)


@pytest.mark.usefixtures("no_installed_orthanc", "not_root")
def test_nox_demo_without_orthanc_says_the_demo_needs_it_and_not_nginx():
    message = _nox_refusal("the demo", nginx=False)
    assert message.startswith("Orthanc with its DICOMweb plugin is needed for the demo, ")
    assert "nginx" not in message
    assert message.endswith("the DICOMweb plugin of an existing build")


@pytest.mark.usefixtures("no_installed_orthanc", "not_root")
def test_nox_tests_without_orthanc_or_nginx_name_both_once(monkeypatch: pytest.MonkeyPatch):
    noxfile = pytest.importorskip("noxfile")
    monkeypatch.delenv("NGINX_BIN", raising=False)

    def no_nginx() -> str:
        raise NginxUnavailableError("nginx is not installed")

    monkeypatch.setattr(noxfile, "find_nginx", no_nginx)
    message = _nox_refusal("the tests", nginx=True)
    assert message.startswith("Orthanc with its DICOMweb plugin is needed for the tests, ")
    assert message.count("scripts/install-orthanc.sh") == 1
    assert message.endswith(
        "nginx, the TLS front of the HTTPS ones among the tests, is missing too: the same "
        "script installs it, or set NGINX_BIN to an nginx binary"
    )


def test_nox_refuses_a_bad_orthanc_bin_without_installing(monkeypatch: pytest.MonkeyPatch):
    noxfile = pytest.importorskip("noxfile")
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # root: the case that used to install

    def no_install(*args: object, **kwargs: object) -> None:
        raise AssertionError("installing cannot fix ORTHANC_BIN")

    monkeypatch.setattr(noxfile.subprocess, "run", no_install)
    monkeypatch.setenv("ORTHANC_BIN", "/nonexistent/Orthanc")
    message = _nox_refusal("the demo", nginx=False)
    assert message.startswith("ORTHANC_BIN=/nonexistent/Orthanc is not an executable file. ")
