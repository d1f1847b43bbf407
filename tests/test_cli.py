"""The `aiodicomweb` command: as a subprocess against a real Orthanc, and its parts in-process."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from aiodicomweb import DicomWebHTTPError, DicomWebTransportError, InvalidUIDError
from aiodicomweb.cli import commands as cli
from aiodicomweb.cli.display import (
    MB,
    Progress,
    Snapshot,
    Terminal,
    describe,
    format_duration,
    format_size,
    status_line,
    throughput,
)
from tests.conftest import AUTH_PASSWORD, AUTH_USER
from tests.support.certs import Certificates
from tests.support.corpus import Corpus, delete_study, orthanc_id, stored_bytes
from tests.support.dicomgen import TEST_CORPUS, SeriesSpec, generate_series
from tests.support.orthanc import OrthancServer, free_port
from tests.support.proxy import ForwardProxy
from tests.support.tls import TlsFront

ROOT = Path(__file__).resolve().parents[1]
ALPHA, ALPHA_MR, BETA_MULTIFRAME, BETA_RLE, BETA_DEFLATED = TEST_CORPUS
WRONG_PASSWORD = "not-the-Pa55word-42"
SUMMARY = re.compile(r"^Downloaded (\d+) instances \([\d.]+ MB\) in [\d.]+ s, [\d.]+ MB/s, into ")


# The console script users run (installed with the package), else the module.
SCRIPT = Path(sys.executable).with_name("aiodicomweb")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "aiodicomweb"]


def run_cli(*args: str, url: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """`aiodicomweb ARGS` from the repository root, stdin closed, no DICOMWEB_*."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")}
    if url is not None:
        environment["DICOMWEB_URL"] = url
    environment.update(env)
    return subprocess.run(
        [*COMMAND, *args],
        cwd=ROOT,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


def sop_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def assert_same_as_server(folder: Path, orthanc: OrthancServer, corpus: Corpus) -> None:
    """Every file of a series folder holds exactly the bytes Orthanc stores, all instances once."""
    sops = []
    for path in sorted(folder.iterdir()):
        sop = sop_of(path)
        assert path.read_bytes() == stored_bytes(orthanc, sop), path
        sops.append(sop)
    assert sorted(sops) == sorted(i.sop_instance_uid for i in corpus.series(folder.name))


# -- against Orthanc, as a subprocess ---------------------------------------------


def test_search_studies_prints_a_table_of_the_corpus(orthanc: OrthancServer, corpus: Corpus):
    result = run_cli("search", "studies", url=orthanc.dicomweb_url)
    assert result.returncode == 0, result.stderr
    header, _, *rows = result.stdout.splitlines()
    assert header.split()[:3] == ["StudyInstanceUID", "PatientName", "PatientID"]
    for study_uid, name in ((ALPHA.study_uid, "TEST^ALPHA"), (BETA_RLE.study_uid, "TEST^BETA")):
        assert any(row.split()[:2] == [study_uid, name] for row in rows), result.stdout


def test_search_json_lines_are_the_servers_datasets(orthanc: OrthancServer, corpus: Corpus):
    study = BETA_RLE.study_uid
    result = run_cli(
        "search",
        "series",
        "--study",
        study,
        "-m",
        "Modality=CT",
        "--json",
        url=orthanc.dicomweb_url,
    )
    assert result.returncode == 0, result.stderr
    datasets = [json.loads(line) for line in result.stdout.splitlines()]
    found = {ds["0020000E"]["Value"][0] for ds in datasets}
    assert found == {BETA_RLE.series_uid, BETA_DEFLATED.series_uid}  # the OT series is not CT
    assert all(ds["00080060"]["Value"] == ["CT"] for ds in datasets)


def test_search_json_and_include_all_carry_the_tables_fields(
    orthanc: OrthancServer, corpus: Corpus
):
    result = run_cli("search", "studies", "--json", url=orthanc.dicomweb_url)
    assert result.returncode == 0, result.stderr
    datasets = [json.loads(line) for line in result.stdout.splitlines()]
    assert datasets and all("00081030" in ds for ds in datasets)  # StudyDescription
    table = run_cli("search", "studies", "--include", "all", url=orthanc.dicomweb_url)
    assert table.returncode == 0, table.stderr
    row = next(r for r in table.stdout.splitlines() if r.startswith(ALPHA.study_uid))
    assert ALPHA.study_description.split()[0] in row


def test_download_without_arguments_names_what_is_required():
    result = run_cli("download")
    assert result.returncode == 2
    assert "required: STUDY, -o/--output" in result.stderr


def test_download_study_writes_the_servers_bytes_with_plain_progress_lines(
    orthanc: OrthancServer, corpus: Corpus, tmp_path: Path
):
    out = tmp_path / "study"
    result = run_cli("download", ALPHA.study_uid, "-o", str(out), url=orthanc.dicomweb_url)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == corpus.series_uids(ALPHA.study_uid)
    for folder in out.iterdir():
        assert_same_as_server(folder, orthanc, corpus)
    summary = SUMMARY.match(result.stdout)
    assert summary and int(summary.group(1)) == len(corpus.study(ALPHA.study_uid))
    # stderr is a pipe here: whole lines, no carriage returns or escape sequences.
    assert "\r" not in result.stderr and "\x1b" not in result.stderr
    for spec in (ALPHA, ALPHA_MR):
        assert f"series {spec.series_uid}: {spec.instances} instances" in result.stderr


def test_download_study_lists_the_series_once(
    orthanc: OrthancServer, corpus: Corpus, tmp_path: Path
):
    out = tmp_path / "study"
    result = run_cli("--debug", "download", ALPHA.study_uid, "-o", str(out),
                     url=orthanc.dicomweb_url)  # fmt: skip
    assert result.returncode == 0, result.stderr
    listings = [line for line in result.stderr.splitlines()
                if f"/studies/{ALPHA.study_uid}/series?" in line and "-> 200" in line]  # fmt: skip
    assert len(listings) == 1, result.stderr


def test_download_of_some_series_per_instance_is_silent_with_quiet(
    orthanc: OrthancServer, corpus: Corpus, tmp_path: Path
):
    out = tmp_path / "some"
    wanted = [BETA_RLE.series_uid, BETA_DEFLATED.series_uid]
    options = ["-o", str(out), "--strategy", "per_instance", "--quiet"]
    result = run_cli("download", BETA_RLE.study_uid, *wanted, *options, url=orthanc.dicomweb_url)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert SUMMARY.match(result.stdout)
    assert sorted(p.name for p in out.iterdir()) == sorted(wanted)
    for folder in out.iterdir():
        assert_same_as_server(folder, orthanc, corpus)


def test_download_makes_missing_parents_and_merges_only_when_asked(
    orthanc: OrthancServer, corpus: Corpus, tmp_path: Path
):
    out = tmp_path / "new" / "root" / "cohort"
    first = run_cli("download", ALPHA.study_uid, "-o", str(out), url=orthanc.dicomweb_url)
    assert first.returncode == 0, first.stderr
    again = run_cli("download", BETA_RLE.study_uid, "-o", str(out), url=orthanc.dicomweb_url)
    assert again.returncode == 1
    assert "--merge" in assert_one_error_line(again)
    merged = run_cli(
        "download", BETA_RLE.study_uid, "-o", str(out), "--merge", url=orthanc.dicomweb_url
    )
    assert merged.returncode == 0, merged.stderr
    both = corpus.series_uids(ALPHA.study_uid) + corpus.series_uids(BETA_RLE.study_uid)
    assert sorted(p.name for p in out.iterdir()) == sorted(both)
    for folder in out.iterdir():
        assert_same_as_server(folder, orthanc, corpus)
    twice = run_cli(
        "download", BETA_RLE.study_uid, "-o", str(out), "--merge", url=orthanc.dicomweb_url
    )
    assert twice.returncode == 1
    assert "already holds series" in assert_one_error_line(twice)
    assert sorted(p.name for p in out.iterdir()) == sorted(both)


def test_metadata_prints_dicom_json(orthanc: OrthancServer, corpus: Corpus):
    spec = ALPHA_MR
    result = run_cli(
        "metadata", spec.study_uid, spec.series_uid, "--json", url=orthanc.dicomweb_url
    )
    assert result.returncode == 0, result.stderr
    sops = {json.loads(line)["00080018"]["Value"][0] for line in result.stdout.splitlines()}
    assert sops == {i.sop_instance_uid for i in corpus.series(spec.series_uid)}


@pytest.fixture
def new_study(orthanc: OrthancServer, tmp_path: Path) -> Iterator[tuple[SeriesSpec, Path]]:
    """A generated series written to a folder (plus a file that is not DICOM); removed after."""
    spec = SeriesSpec(study=20_001, series=1, instances=4, rows=64, columns=64)
    folder = tmp_path / "to-store"
    (folder / "sub").mkdir(parents=True)
    for instance in generate_series(spec):
        (folder / "sub" / f"{instance.sop_instance_uid}.dcm").write_bytes(instance.data)
    (folder / "README.txt").write_text("not DICOM")
    yield spec, folder
    delete_study(orthanc, spec.study_uid)


def test_store_a_folder_find_it_and_delete_it(
    orthanc: OrthancServer, new_study: tuple[SeriesSpec, Path]
):
    spec, folder = new_study
    url = orthanc.dicomweb_url
    stored = run_cli("store", str(folder), url=url)
    assert stored.returncode == 0, stored.stderr
    assert stored.stdout.startswith(f"Stored {spec.instances} instances")
    found = run_cli("search", "instances", "--study", spec.study_uid, "--json", url=url)
    assert len(found.stdout.splitlines()) == spec.instances
    deleted = run_cli("delete", "study", spec.study_uid, "--delete-strategy", "orthanc", url=url)
    assert deleted.returncode == 0, deleted.stderr
    assert orthanc_id(orthanc, spec.study_uid, "Study") is None


def test_store_reports_skipped_files_and_refuses_a_named_one_that_is_not_dicom(
    orthanc: OrthancServer, new_study: tuple[SeriesSpec, Path]
):
    spec, folder = new_study
    (folder / "README.txt").write_text("not an instance")
    stored = run_cli("store", str(folder), url=orthanc.dicomweb_url)
    assert stored.returncode == 0, stored.stderr
    assert (
        stored.stdout.splitlines()[-1]
        == f"{spec.instances} stored, 0 failed, 1 skipped: not DICOM"
    )
    named = run_cli("store", str(folder / "README.txt"), url=orthanc.dicomweb_url)
    assert named.returncode == 2
    assert "README.txt: not DICOM" in assert_one_error_line(named)


def test_https_with_cacert_and_proxy_and_a_hint_when_the_ca_is_unknown(
    orthanc_https: TlsFront,
    corpus: Corpus,
    certificates: Certificates,
    forward_proxy: ForwardProxy,
):
    url = orthanc_https.dicomweb_url
    unknown = run_cli("search", "studies", "--retries", "0", url=url)
    assert unknown.returncode == 1
    message = assert_one_error_line(unknown)
    assert "certificate verify failed" in message and "--cacert" in message
    found = run_cli(
        "search", "studies", "--cacert", str(certificates.ca), "--proxy", forward_proxy.url,
        "--json", url=url,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert ALPHA.study_uid in found.stdout
    assert forward_proxy.requests == [f"CONNECT 127.0.0.1:{orthanc_https.port} HTTP/1.1"]
    by_env = run_cli("search", "studies", "--json", url=url, SSL_CERT_FILE=str(certificates.ca))
    assert by_env.returncode == 0, by_env.stderr
    both = run_cli("search", "studies", "--insecure", "--cacert", str(certificates.ca), url=url)
    assert both.returncode == 2


def test_search_by_an_iso_date_finds_the_study(orthanc: OrthancServer, corpus: Corpus):
    result = run_cli("search", "studies", "-m", "StudyDate=2024-01-15", "--json",
                     url=orthanc.dicomweb_url)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert ALPHA.study_uid in result.stdout
    bad = run_cli("search", "studies", "-m", "StudyDate=15/01/2024", url=orthanc.dicomweb_url)
    assert bad.returncode == 2
    assert "use YYYYMMDD" in assert_one_error_line(bad)


def test_store_failure_exits_1_with_a_summary(orthanc: OrthancServer, tmp_path: Path):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\0" * 128 + b"DICM" + b"not really")
    result = run_cli("store", str(junk), "--quiet", url=orthanc.dicomweb_url)
    assert result.returncode == 1
    assert result.stdout.startswith("Stored 0 of 1 instance")
    assert "error: not everything was stored: 0 stored, 1 failed" in result.stderr


def test_connection_refused_is_one_line_and_exit_1():
    result = run_cli("search", "studies", "--retries", "0", url=f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "connection failed" in assert_one_error_line(result)


def test_bad_credentials_exit_1_and_never_show_the_password(
    orthanc_auth: OrthancServer, corpus_auth: Corpus
):
    url = orthanc_auth.dicomweb_url
    refused = run_cli(
        "search",
        "studies",
        "--user",
        AUTH_USER,
        "--password",
        WRONG_PASSWORD,
        "--retries",
        "0",
        url=url,
    )
    assert refused.returncode == 1
    assert "401" in assert_one_error_line(refused)
    assert WRONG_PASSWORD not in refused.stdout + refused.stderr
    allowed = run_cli(
        "search", "studies", url=url, DICOMWEB_USER=AUTH_USER, DICOMWEB_PASSWORD=AUTH_PASSWORD
    )
    assert allowed.returncode == 0, allowed.stderr
    assert ALPHA.study_uid in allowed.stdout
    assert AUTH_PASSWORD not in allowed.stdout + allowed.stderr


def test_a_password_file_keeps_the_password_off_the_command_line(
    orthanc_auth: OrthancServer, corpus_auth: Corpus, tmp_path: Path
):
    secret = tmp_path / "password"
    secret.write_text(AUTH_PASSWORD + "\n")  # as an editor or `echo` writes it
    args = ("search", "studies", "--user", AUTH_USER, "--password-file", str(secret))
    allowed = run_cli(*args, url=orthanc_auth.dicomweb_url)
    assert allowed.returncode == 0, allowed.stderr
    assert ALPHA.study_uid in allowed.stdout
    missing = run_cli(*args[:-1], str(tmp_path / "nowhere"), url=orthanc_auth.dicomweb_url)
    assert missing.returncode == 2 and "--password-file" in missing.stderr
    assert "--password-file" in run_cli("--help").stdout


def test_bad_arguments_exit_2():
    result = run_cli(
        "download", "1.2.3", "-o", "x", "--concurrency", "0", url="http://127.0.0.1:9"
    )
    assert result.returncode == 2
    assert "usage:" in result.stderr and "--concurrency" in result.stderr


def test_invalid_uid_exits_2_before_any_request():
    result = run_cli("metadata", "1.2.three", url=f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 2
    assert "invalid StudyInstanceUID" in assert_one_error_line(result)


# -- in-process: arguments, errors, output helpers ----------------------------------


@pytest.fixture
def no_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DICOMWEB_URL", "DICOMWEB_USER", "DICOMWEB_PASSWORD", "DICOMWEB_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([], id="no-command"),
        pytest.param(["fetch"], id="unknown-command"),
        pytest.param(["search"], id="no-level"),
        pytest.param(["search", "studies", "-m", "PatientName"], id="match-without-value"),
        pytest.param(["search", "studies", "--limit", "-1"], id="negative-limit"),
        pytest.param(["search", "studies", "--study", "1.2"], id="study-scope-on-studies"),
        pytest.param(["download", "1.2.3"], id="download-without-output"),
        pytest.param(["download", "1.2", "-o", "x", "--strategy", "zip"], id="unknown-strategy"),
        pytest.param(["store"], id="store-nothing"),
        pytest.param(["delete", "patient", "1.2"], id="delete-unknown-level"),
        pytest.param(["search", "studies", "--timeout", "0"], id="zero-timeout"),
        pytest.param(["search", "studies"], id="no-url"),
        pytest.param(["search", "studies", "--url", "ftp://x"], id="not-http"),
        pytest.param(
            ["search", "studies", "--url", "http://h", "--user", "u", "--token", "t"],
            id="user-and-token",
        ),
        pytest.param(
            ["search", "studies", "--url", "http://h", "-m", "NoSuchKey=1"], id="unknown-attribute"
        ),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], no_settings: None, capsys: pytest.CaptureFixture[str]
):
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "error" in captured.err and "Traceback" not in captured.err


def test_common_options_work_before_and_after_the_command():
    before = cli.build_parser().parse_args(["--url", "http://a", "-q", "search", "studies"])
    after = cli.build_parser().parse_args(["search", "studies", "--url", "http://b"])
    assert (before.url, before.quiet, after.url, after.quiet) == (
        "http://a",
        True,
        "http://b",
        False,
    )


class Stdin(io.StringIO):
    def __init__(self, *, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_user_without_password_is_prompted_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, no_settings: None
):
    monkeypatch.setattr(sys, "stdin", Stdin(tty=False))
    args = cli.build_parser().parse_args(["search", "studies", "--url", "http://h", "--user", "u"])
    with pytest.raises(cli.CliError, match="no password") as refused:
        cli.client_options(args)
    assert refused.value.code == 2
    monkeypatch.setattr(sys, "stdin", Stdin(tty=True))
    monkeypatch.setattr(cli.getpass, "getpass", lambda prompt: "typed")
    _, options = cli.client_options(args)
    assert options["auth"] == ("u", "typed")


def test_environment_supplies_url_and_token(monkeypatch: pytest.MonkeyPatch, no_settings: None):
    monkeypatch.setenv("DICOMWEB_URL", "http://env/dicom-web")
    monkeypatch.setenv("DICOMWEB_TOKEN", "tok")
    args = cli.build_parser().parse_args(
        ["delete", "study", "1.2", "--retries", "0", "--insecure"]
    )
    url, options = cli.client_options(args)
    assert url == "http://env/dicom-web"
    assert type(options["auth"]).__name__ == "BearerTokenAuth"
    assert options["retry"] is None and options["verify"] is False
    assert options["delete_strategy"] == "dicomweb"


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]):
    url = f"http://127.0.0.1:{free_port()}"
    assert cli.main(["search", "studies", "--url", url, "--retries", "0", "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("error: ")


def test_insecure_warns_before_connecting(capsys: pytest.CaptureFixture[str]):
    url = f"https://127.0.0.1:{free_port()}/dicom-web"
    assert cli.main(["search", "studies", "--url", url, "--retries", "0", "--insecure"]) == 1
    warning, error = capsys.readouterr().err.splitlines()
    assert warning == "warning: TLS certificate verification is disabled (--insecure)"
    assert error.startswith("error: ") and "connection failed" in error


@pytest.mark.parametrize(
    ("error", "code"),
    [
        pytest.param(InvalidUIDError("bad"), 2, id="usage"),
        pytest.param(ValueError("bad"), 2, id="value"),
        pytest.param(DicomWebTransportError("down"), 1, id="transport"),
        pytest.param(DicomWebHTTPError("no", status=500, method="GET", url="u"), 1, id="http"),
        pytest.param(FileExistsError(17, "exists", "/x"), 1, id="os"),
        pytest.param(cli.CliError("custom", 2), 2, id="cli"),
        pytest.param(RuntimeError("bug"), 1, id="unexpected"),
    ],
)
def test_exit_codes(error: Exception, code: int):
    assert cli.exit_code(error) == code
    assert "\n" not in cli.error_message(error)


def test_table_shows_person_names_and_numbers_and_keeps_uids_whole():
    uid = "1.2." + "3" * 60
    datasets = [
        {
            "0020000E": {"vr": "UI", "Value": [uid]},
            "00080060": {"vr": "CS", "Value": ["MR"]},
            "00200011": {"vr": "IS", "Value": [7]},
            "0008103E": {"vr": "LO", "Value": ["x" * 80]},
        }
    ]
    header, rule, row = cli.format_table(cli.COLUMNS["series"], datasets).splitlines()
    assert header.split() == [
        "SeriesInstanceUID",
        "Modality",
        "Number",
        "SeriesDescription",
        "Instances",
    ]
    assert set(rule.replace(" ", "")) == {"-"}
    assert row.split()[:3] == [uid, "MR", "7"]
    assert row.split()[3].endswith("...") and len(row.split()[3]) == 40
    name = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "DOE^J"}]}}
    assert cli.element_text(name, "PatientName") == "DOE^J"
    assert cli.element_text({}, "PatientName") == ""


# -- the progress renderer -----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_formats():
    assert format_size(39_612_345) == "39.6 MB"
    assert throughput(50_000_000, 2.0) == "25.0 MB/s"
    assert throughput(1, 0.0) == "- MB/s"
    assert format_duration(65) == "1:05"
    assert format_duration(3725) == "1:02:05"


def test_snapshot_eta_from_bytes_else_instances_else_unknown():
    assert Snapshot(10, 25, 5.0, total_instances=100, total_bytes=100).eta == pytest.approx(15.0)
    assert Snapshot(25, 0, 5.0, total_instances=100).eta == pytest.approx(15.0)
    assert Snapshot(25, 0, 5.0).eta is None
    assert Snapshot(0, 0, 0.0, total_instances=100).eta is None
    text = describe(Snapshot(3, 2_000_000, 1.0, total_instances=4, total_bytes=4_000_000))
    assert text == "3/4 instances, 2.0/4.0 MB, 2.0 MB/s, ETA 0:01"


def test_status_line_fits_the_terminal_and_drops_the_bar_first():
    snapshot = Snapshot(150, 19_800_000, 1.0, total_instances=300)
    wide = status_line("download", snapshot, 100)
    assert wide.startswith("download [##########..........]")
    assert wide.endswith("150/300  19.8 MB  19.8 MB/s  ETA 0:01")
    narrow = status_line("download", snapshot, 60)
    assert "[" not in narrow and len(narrow) <= 59 and "ETA" in narrow
    assert len(status_line("download", snapshot, 20)) == 19


def test_terminal_redraws_one_status_line_and_prints_lines_above_it():
    stream = io.StringIO()
    terminal = Terminal(stream, tty=True, width=80)
    terminal.status("1/2")
    terminal.line("series done")
    terminal.status("2/2")
    terminal.clear_status()
    assert stream.getvalue() == ("\r\x1b[K1/2\r\x1b[Kseries done\n\r\x1b[K1/2\r\x1b[K2/2\r\x1b[K")


def test_progress_on_a_terminal_is_throttled_but_shows_completion():
    stream, clock = io.StringIO(), Clock()
    progress = Progress(
        Terminal(stream, tty=True, width=120),
        "store",
        total_instances=3,
        clock=clock,
        redraw_every=0.1,
    )
    progress.update(1, 10)  # too soon after the start
    clock.now += 0.2
    progress.update(2, 20)
    progress.update(3, 30)  # complete: drawn at once
    draws = stream.getvalue().split("\r\x1b[K")[1:]
    assert [d.split()[3] for d in draws] == ["2/3", "3/3"]


def test_progress_elsewhere_prints_plain_periodic_lines_and_notes():
    stream, clock = io.StringIO(), Clock()
    progress = Progress(
        Terminal(stream, tty=False), "download", total_instances=10, clock=clock, line_every=10.0
    )
    for count in range(1, 11):
        clock.now += 3.0
        progress.update(count, count * MB)
        if count == 5:
            progress.note("series 1.2: 5 instances, 5.0 MB")
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines == [
        "download: 4/10 instances, 4.0 MB, 0.3 MB/s, ETA 0:18",
        "series 1.2: 5 instances, 5.0 MB",
        "download: 8/10 instances, 8.0 MB, 0.3 MB/s, ETA 0:06",
    ]
    assert "\r" not in stream.getvalue()


def test_disabled_progress_counts_but_prints_nothing():
    stream = io.StringIO()
    progress = Progress(Terminal(stream, tty=True), "store", enabled=False)
    progress.advance(2, 100)
    progress.advance(1, 50)
    progress.note("hidden")
    progress.close()
    assert (progress.instances, progress.bytes, stream.getvalue()) == (3, 150, "")
