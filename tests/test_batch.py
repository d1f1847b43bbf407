"""Batch downloads of manifests: parsing, in-process and on a Dask LocalCluster, against Orthanc.

The Dask tests share one LocalCluster of two worker processes with one thread each.
Items are made slow, where a test must catch them in flight, by `SlowRelay`, a TCP
relay that passes the server's bytes on at a fixed rate; nothing is timed.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import pydicom
import pytest

from aiodicomweb import MissingDependencyError, RetryPolicy
from aiodicomweb.batch import (
    RECORDS,
    BatchProgress,
    BatchResult,
    ManifestError,
    ManifestRow,
    download_manifest,
    parse_manifest,
    read_manifest,
)
from aiodicomweb.batch._layout import clear_series
from aiodicomweb.cli import commands as cli
from aiodicomweb.cli.batch import batch_status
from tests.conftest import AUTH_PASSWORD, AUTH_USER
from tests.support.corpus import Corpus, delete_study, stored_bytes, upload_instances
from tests.support.dicomgen import TEST_CORPUS, SeriesSpec, generate_series
from tests.support.orthanc import OrthancServer

ALPHA, ALPHA_MR, BETA_MULTIFRAME, BETA_RLE, BETA_DEFLATED = TEST_CORPUS
# Small series, many of them: what the slow tests download (about 100 kB each).
SLOW_SET = tuple(
    SeriesSpec(study=6101, series=n, instances=3, rows=128, columns=128) for n in range(1, 9)
)
QUICK_RETRY = RetryPolicy(max_attempts=2, backoff_multiplier=0.01, jitter=0)
HEADER = ("PatientID", "StudyInstanceUID", "Modality", "SeriesInstanceUID")


# -- helpers ------------------------------------------------------------------------


def write_csv(path: Path, rows: Sequence[tuple[str, str]]) -> Path:
    """An IDC-like manifest: (study, series) per row, series "" for a study row."""
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(HEADER)
        for study, series in rows:
            writer.writerow(["P1", study, "CT", series])
    return path


def series_rows(specs: Sequence[SeriesSpec]) -> list[tuple[str, str]]:
    return [(spec.study_uid, spec.series_uid) for spec in specs]


def sop_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def assert_series_exact(root: Path, orthanc: OrthancServer, specs: Sequence[SeriesSpec]) -> None:
    """Each series folder holds exactly the bytes Orthanc stores, every instance once."""
    for spec in specs:
        folder = root / spec.study_uid / spec.series_uid
        names = sorted(os.listdir(folder))
        assert names == [f"file{n:06d}.dcm" for n in range(spec.instances)], folder
        sops = {sop_of(folder / name) for name in names}
        assert len(sops) == spec.instances
        for name in names:
            assert (folder / name).read_bytes() == stored_bytes(orthanc, sop_of(folder / name))
        assert (root / RECORDS / spec.study_uid / f"{spec.series_uid}.json").is_file()


def leftovers(root: Path) -> list[str]:
    """Staging folders and temporary records anywhere under `root`."""
    found = []
    for folder, dirs, files in os.walk(root):
        found += [
            os.path.join(folder, n) for n in dirs + files if n.endswith((".partial", ".tmp"))
        ]
    return found


def statuses(result: BatchResult) -> dict[str | None, str]:
    return {item.series_uid: item.status for item in result.items}


class SlowRelay:
    """A TCP relay on loopback to `target_port` that sends the server's bytes on at
    `rate` bytes/s per connection. `stop()` cuts every connection and refuses new ones
    (a server gone away); `start()` listens again on the same port."""

    def __init__(self, target_port: int, rate: int) -> None:
        self.target_port = target_port
        self.rate = rate
        self.port = 0
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/dicom-web"

    def start(self) -> SlowRelay:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                return
            with self._lock:
                self._sockets += [client, upstream]
            for args in ((client, upstream, 0), (upstream, client, self.rate)):
                threading.Thread(target=self._pipe, args=args, daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, rate: int) -> None:
        try:
            while data := source.recv(4096):
                sink.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()


@pytest.fixture(scope="module")
def slow_set(orthanc: OrthancServer) -> Iterator[tuple[SeriesSpec, ...]]:
    """SLOW_SET, stored in Orthanc, and removed again (other modules count the studies)."""
    upload_instances(orthanc, [i for spec in SLOW_SET for i in generate_series(spec)])
    yield SLOW_SET
    for study_uid in {spec.study_uid for spec in SLOW_SET}:
        delete_study(orthanc, study_uid)


@pytest.fixture
def relay(orthanc: OrthancServer) -> Iterator[SlowRelay]:
    """A relay passing on 100 kB/s per connection: about a second per SLOW_SET series."""
    relay = SlowRelay(orthanc.port, rate=100_000).start()
    yield relay
    relay.stop()


# -- manifests ---------------------------------------------------------------------


def test_csv_manifest_reads_study_and_series_rows_by_line():
    text = (
        "\ufeffPatientID,studyinstanceuid , Modality,SeriesInstanceUID\n"
        "P1,1.2.3,CT,1.2.3.4\n"
        "\n"
        'P1," 1.2.3 ",CT,\n'
        "P2,1.2.5\n"
    )
    manifest = parse_manifest(text.removeprefix("\ufeff"), source="idc.csv")
    assert manifest.rows == (
        ManifestRow(2, "1.2.3", "1.2.3.4"),
        ManifestRow(4, "1.2.3", None),
        ManifestRow(5, "1.2.5", None),
    )
    assert manifest.invalid == ()


def test_json_lines_manifest_reads_the_same_keys(tmp_path: Path):
    path = tmp_path / "cohort.jsonl"
    path.write_text(
        '{"StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "1.2.3.4", "collection": "x"}\n'
        "\n"
        '{"StudyInstanceUID": "1.2.5", "SeriesInstanceUID": null}\n'
    )
    manifest = read_manifest(path)
    assert manifest.rows == (ManifestRow(1, "1.2.3", "1.2.3.4"), ManifestRow(3, "1.2.5", None))
    assert manifest.source == "cohort.jsonl"


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        pytest.param(
            "StudyInstanceUID,SeriesInstanceUID\n1.2.3,1.2.3.4\n1.2.x,\n,1.2.3.5\n1.2.3,../etc\n",
            {3: "InvalidUIDError", 4: "ManifestError", 5: "InvalidUIDError"},
            id="csv",
        ),
        pytest.param(
            '{"StudyInstanceUID": "1.2.3"}\n{"StudyInstanceUID": 12}\nnot json\n[1]\n'
            '{"StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "1..2"}\n',
            {2: "InvalidUIDError", 3: "ManifestError", 4: "ManifestError", 5: "InvalidUIDError"},
            id="jsonl",
        ),
    ],
)
def test_bad_rows_are_reported_with_their_line_numbers(text: str, bad: dict[int, str]):
    manifest = parse_manifest(text, source="m")
    assert {row.line: row.error_type for row in manifest.invalid} == bad
    assert [row.line for row in manifest.rows] == ([1] if text.startswith("{") else [2])
    with pytest.raises(ManifestError) as caught:
        manifest.check()
    assert all(f"line {line}:" in str(caught.value) for line in bad)
    assert isinstance(caught.value, ValueError)


def test_a_csv_without_a_study_column_is_refused():
    with pytest.raises(ManifestError, match="no StudyInstanceUID column"):
        parse_manifest("SeriesInstanceUID\n1.2.3\n", source="m.csv")


def test_clearing_a_series_spares_others_with_a_longer_uid(tmp_path: Path):
    study = tmp_path / "1.2"
    for name in (".1.2.3.0a1b2c3d.partial", ".1.2.3.4.0a1b2c3d.partial", "1.2.3", "1.2.3.4"):
        (study / name).mkdir(parents=True)
    clear_series(tmp_path, "1.2", "1.2.3")
    assert sorted(os.listdir(study)) == [".1.2.3.4.0a1b2c3d.partial", "1.2.3.4"]


def test_batch_status_shows_items_bytes_rate_and_eta():
    progress = BatchProgress(
        items=12, done=6, downloaded=3, skipped=2, failed=1, instances=30,
        bytes=4_000_000, elapsed=2.0,
    )  # fmt: skip
    assert progress.fraction == 0.4
    assert batch_status(progress) == "batch  40%  6/12 items  1 failed  4.0 MB  2.0 MB/s  ETA 0:03"


def test_the_in_process_mode_imports_no_dask():
    code = (
        "import sys, aiodicomweb.batch, aiodicomweb.cli.batch\n"
        "assert not {'dask', 'distributed'} & set(sys.modules), 'dask imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_dask_mode_without_dask_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "distributed", None)
    monkeypatch.delitem(sys.modules, "aiodicomweb.batch._dask", raising=False)
    manifest = write_csv(tmp_path / "m.csv", [("1.2.3", "")])
    with pytest.raises(MissingDependencyError, match=r'pip install "aiodicomweb\[dask\]"'):
        download_manifest(manifest, tmp_path / "out", url="http://127.0.0.1:9/x", workers=2)
    assert not (tmp_path / "out").exists()


# -- in-process, against Orthanc ---------------------------------------------------


def test_in_process_batch_of_studies_and_series_is_byte_exact_and_a_rerun_skips_it(
    orthanc: OrthancServer, corpus: Corpus, tmp_path: Path
):
    manifest = write_csv(
        tmp_path / "cohort.csv",
        [(ALPHA.study_uid, ""), *series_rows([BETA_RLE, BETA_DEFLATED, BETA_RLE])],
    )
    out, report = tmp_path / "deep" / "out", tmp_path / "report.csv"
    seen: list[BatchProgress] = []
    result = download_manifest(
        manifest, out, url=orthanc.dicomweb_url, report=report, progress=seen.append
    )
    specs = [ALPHA, ALPHA_MR, BETA_RLE, BETA_DEFLATED]
    assert statuses(result) == {spec.series_uid: "downloaded" for spec in specs}
    assert_series_exact(out, orthanc, specs)
    assert result.ok and result.instances == sum(spec.instances for spec in specs)
    assert leftovers(out) == []
    rows = list(csv.DictReader(report.open()))
    assert sorted((r["line"], r["SeriesInstanceUID"]) for r in rows) == [
        ("2", ALPHA.series_uid), ("2", ALPHA_MR.series_uid), ("3", BETA_RLE.series_uid),
        ("4", BETA_DEFLATED.series_uid),
    ]  # fmt: skip
    assert seen[-1].done == seen[-1].items == 4 and seen[-1].bytes == result.bytes
    inodes = {path: path.stat().st_ino for path in out.rglob("*.dcm")}

    again = download_manifest(manifest, out, url=orthanc.dicomweb_url, report=report)
    assert statuses(again) == {spec.series_uid: "skipped" for spec in specs}
    assert again.bytes == 0 and again.skipped == 4
    assert {path: path.stat().st_ino for path in out.rglob("*.dcm")} == inodes
    assert {r["status"] for r in csv.DictReader(report.open())} == {"skipped"}


def test_leftovers_of_a_crash_are_cleared_and_the_series_downloaded_again(
    orthanc: OrthancServer, corpus: Corpus, tmp_path: Path
):
    out = tmp_path / "out"
    staging = out / ALPHA.study_uid / f".{ALPHA.series_uid}.0123abcd.partial"
    staging.mkdir(parents=True)
    (staging / "file000000.dcm").write_bytes(b"half")
    unrecorded = out / ALPHA.study_uid / ALPHA_MR.series_uid  # renamed, record never written
    unrecorded.mkdir()
    (unrecorded / "file000000.dcm").write_bytes(b"unknown")
    manifest = write_csv(tmp_path / "m.csv", series_rows([ALPHA, ALPHA_MR]))
    result = download_manifest(manifest, out, url=orthanc.dicomweb_url)
    assert statuses(result) == {ALPHA.series_uid: "downloaded", ALPHA_MR.series_uid: "downloaded"}
    assert_series_exact(out, orthanc, [ALPHA, ALPHA_MR])
    assert leftovers(out) == []


def test_a_bad_row_stops_everything_unless_skip_invalid(
    orthanc: OrthancServer, corpus: Corpus, tmp_path: Path
):
    manifest = write_csv(
        tmp_path / "m.csv", [*series_rows([BETA_RLE]), ("1.2.bad", ""), (BETA_RLE.study_uid, "x")]
    )
    with pytest.raises(ManifestError, match=r"2 invalid rows.*line 3: .*'1\.2\.bad'.*line 4"):
        download_manifest(manifest, tmp_path / "out", url=orthanc.dicomweb_url)
    assert not (tmp_path / "out").exists()

    report = tmp_path / "report.jsonl"
    result = download_manifest(
        manifest, tmp_path / "out", url=orthanc.dicomweb_url, skip_invalid=True, report=report
    )
    assert [(i.line, i.status, i.error_type) for i in result.items] == [
        (2, "downloaded", None),
        (3, "failed", "InvalidUIDError"),
        (4, "failed", "InvalidUIDError"),
    ]
    assert_series_exact(tmp_path / "out", orthanc, [BETA_RLE])
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    assert {row["line"]: row["status"] for row in rows} == {
        2: "downloaded",
        3: "failed",
        4: "failed",
    }


def test_a_server_that_goes_away_fails_items_with_reasons_and_the_rerun_completes_them(
    orthanc: OrthancServer, slow_set: tuple[SeriesSpec, ...], relay: SlowRelay, tmp_path: Path
):
    manifest = write_csv(tmp_path / "m.csv", series_rows(slow_set[:6]))
    out = tmp_path / "out"

    def cut_after_the_first(progress: BatchProgress) -> None:
        if progress.downloaded == 1:
            relay.stop()

    first = download_manifest(manifest, out, url=relay.url, max_requests=2, retry=QUICK_RETRY,
                              progress=cut_after_the_first)  # fmt: skip
    failures = first.with_status("failed")
    assert first.downloaded >= 1 and len(failures) >= 4
    for item in failures:
        assert item.error_type in {"DicomWebTransportError", "MultipartError"}, item
        assert item.error and "127.0.0.1" in item.error
    assert leftovers(out) == []

    relay.start()  # the same address
    second = download_manifest(manifest, out, url=relay.url, max_requests=2)
    assert second.skipped == first.downloaded
    assert second.downloaded == len(failures) and second.ok
    assert_series_exact(out, orthanc, slow_set[:6])
    assert leftovers(out) == []


def test_a_study_the_server_lacks_fails_alone(
    orthanc: OrthancServer, corpus: Corpus, tmp_path: Path
):
    missing = "1.2.826.0.1.3680043.8.498.4711.999"
    manifest = write_csv(tmp_path / "m.csv", [(missing, ""), *series_rows([BETA_DEFLATED])])
    result = download_manifest(manifest, tmp_path / "out", url=orthanc.dicomweb_url)
    assert [(i.line, i.series_uid, i.status, i.error_type) for i in result.items] == [
        (2, None, "failed", "LookupError"), (3, BETA_DEFLATED.series_uid, "downloaded", None),
    ]  # fmt: skip
    assert result.with_status("failed")[0].error == f"study {missing} not found on the server"


# -- the command line ----------------------------------------------------------------


@pytest.fixture
def main() -> Callable[[list[str]], int]:
    """`aiodicomweb`'s main, `batch` among its commands."""
    return cli.main


def test_cli_batch_reports_a_summary_and_a_rerun_skips(
    main: Callable[[list[str]], int], orthanc: OrthancServer, corpus: Corpus, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
):  # fmt: skip
    manifest = write_csv(tmp_path / "m.csv", [(BETA_RLE.study_uid, "")])
    argv = ["--url", orthanc.dicomweb_url, "batch", str(manifest), "-o", str(tmp_path / "out")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("Batch of 3 items: 3 downloaded, 0 skipped, 0 failed; 6 instances")
    assert_series_exact(tmp_path / "out", orthanc, [BETA_MULTIFRAME, BETA_RLE, BETA_DEFLATED])
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("Batch of 3 items: 0 downloaded, 3 skipped")


def test_cli_bad_manifest_exits_2_naming_the_line(
    main: Callable[[list[str]], int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    manifest = write_csv(tmp_path / "m.csv", [("1.2.3", ""), ("1.2.3", "1.2.3.x")])
    argv = ["--url", "http://127.0.0.1:9/dicom-web", "batch", str(manifest), "-o", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: m.csv line 3: invalid SeriesInstanceUID: UID '1.2.3.x' must match" in err
    assert "nothing was downloaded" in err


# -- on a Dask LocalCluster ------------------------------------------------------------


RECORDER = "aiodicomweb-test-recorder"


def task_recorder() -> Any:
    """A scheduler plugin keeping every task's key and pickled definition."""
    from distributed.diagnostics.plugin import SchedulerPlugin
    from distributed.protocol.pickle import dumps

    class TaskRecorder(SchedulerPlugin):  # type: ignore[misc]
        name = RECORDER

        def __init__(self) -> None:
            self.seen: list[tuple[str, bytes]] = []

        async def start(self, scheduler: Any) -> None:
            self.scheduler = scheduler

        def transition(self, key: Any, start: str, finish: str, *args: Any, **kw: Any) -> None:
            task = self.scheduler.tasks.get(key) if finish == "waiting" else None
            if task is not None:
                self.seen.append((str(key), dumps(task.run_spec)))

    return TaskRecorder()


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    """A LocalCluster of two worker processes, one thread each, and a task recorder."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        client.register_plugin(task_recorder())
        yield client


def recorded(client: Any) -> list[tuple[str, bytes]]:
    def seen(dask_scheduler: Any) -> list[tuple[str, bytes]]:
        return list(dask_scheduler.plugins[RECORDER].seen)

    return list(client.run_on_scheduler(seen))


def test_dask_batch_is_byte_exact_and_a_rerun_submits_nothing(
    dask_client: Any, orthanc: OrthancServer, corpus: Corpus, tmp_path: Path
):
    manifest = write_csv(tmp_path / "m.csv", [(ALPHA.study_uid, ""), *series_rows([BETA_RLE])])
    out = tmp_path / "out"
    result = download_manifest(manifest, out, url=orthanc.dicomweb_url, scheduler=dask_client)
    specs = [ALPHA, ALPHA_MR, BETA_RLE]
    assert statuses(result) == {spec.series_uid: "downloaded" for spec in specs}
    assert_series_exact(out, orthanc, specs)
    assert leftovers(out) == []
    tasks = len(recorded(dask_client))

    again = download_manifest(manifest, out, url=orthanc.dicomweb_url, scheduler=dask_client)
    assert statuses(again) == {spec.series_uid: "skipped" for spec in specs}
    assert len(recorded(dask_client)) == tasks  # no task at all


def test_dask_credentials_stay_off_tasks_report_and_logs(
    dask_client: Any, orthanc_auth: OrthancServer, corpus_auth: Corpus, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
):  # fmt: skip
    unknown = f"{ALPHA.study_uid}.77"
    manifest = write_csv(tmp_path / "m.csv", [*series_rows([ALPHA]), (ALPHA.study_uid, unknown)])
    report = tmp_path / "report.jsonl"
    before = len(recorded(dask_client))
    with caplog.at_level(logging.DEBUG):
        result = download_manifest(
            manifest, tmp_path / "out", url=orthanc_auth.dicomweb_url, scheduler=dask_client,
            auth=(AUTH_USER, AUTH_PASSWORD), report=report, retry=None,
        )  # fmt: skip
    assert statuses(result) == {ALPHA.series_uid: "downloaded", unknown: "failed"}
    assert result.with_status("failed")[0].error_type == "DicomWebHTTPError"
    assert_series_exact(tmp_path / "out", orthanc_auth, [ALPHA])
    tasks = recorded(dask_client)[before:]
    assert len(tasks) >= 2
    secrets = [AUTH_PASSWORD, base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()]
    for secret in secrets:
        assert not any(secret in key or secret.encode() in spec for key, spec in tasks)
        assert secret not in report.read_text()
        assert secret not in caplog.text


def test_dask_max_requests_is_one_limit_across_the_cluster(
    dask_client: Any, orthanc: OrthancServer, slow_set: tuple[SeriesSpec, ...],
    relay: SlowRelay, tmp_path: Path,
):  # fmt: skip
    manifest = write_csv(tmp_path / "m.csv", series_rows(slow_set[:4]))
    out = tmp_path / "out"
    outcome: dict[str, Any] = {}

    def batch() -> None:
        outcome["result"] = download_manifest(
            manifest, out, url=relay.url, scheduler=dask_client, max_requests=1
        )

    running = threading.Thread(target=batch)
    running.start()
    most = 0
    while running.is_alive():  # two workers, one lease: one series in flight at a time
        most = max(most, sum(name.endswith(".partial") for name in staging_names(out)))
        time.sleep(0.005)
    running.join()
    assert most == 1
    assert statuses(outcome["result"]) == {spec.series_uid: "downloaded" for spec in slow_set[:4]}


def staging_names(root: Path) -> list[str]:
    with contextlib.suppress(FileNotFoundError):
        return [name for study in os.listdir(root) for name in os.listdir(root / study)]
    return []


# The killed worker's lease is left for the scheduler to expire (lease-timeout).
@pytest.mark.filterwarnings("ignore:Closing semaphore:RuntimeWarning")
def test_dask_worker_killed_mid_series_ends_byte_exact_with_nothing_left_behind(
    dask_client: Any, orthanc: OrthancServer, slow_set: tuple[SeriesSpec, ...],
    relay: SlowRelay, tmp_path: Path,
):  # fmt: skip
    manifest = write_csv(tmp_path / "m.csv", series_rows(slow_set))
    out = tmp_path / "out"
    pids = list(dask_client.run(os.getpid).values())
    outcome: dict[str, Any] = {}

    def batch() -> None:
        try:
            outcome["result"] = download_manifest(
                manifest, out, url=relay.url, scheduler=dask_client, max_requests=4
            )
        except BaseException as error:
            outcome["error"] = error

    running = threading.Thread(target=batch)
    running.start()
    killed = kill_a_worker_writing_a_series(pids, running)
    running.join(timeout=250)
    assert not running.is_alive() and "error" not in outcome, outcome
    result: BatchResult = outcome["result"]
    assert not psutil.pid_exists(killed) or psutil.Process(killed).status() == "zombie"
    assert statuses(result) == {spec.series_uid: "downloaded" for spec in slow_set}
    assert_series_exact(out, orthanc, slow_set)
    assert leftovers(out) == []


@pytest.mark.filterwarnings("ignore:Closing semaphore:RuntimeWarning")
def test_an_item_dask_gives_up_on_fails_alone_and_the_rerun_completes_it(
    orthanc: OrthancServer, slow_set: tuple[SeriesSpec, ...], relay: SlowRelay, tmp_path: Path
):  # fmt: skip
    distributed = pytest.importorskip("distributed")
    import dask

    manifest = write_csv(tmp_path / "m.csv", series_rows(slow_set))
    out = tmp_path / "out"
    outcome: dict[str, Any] = {}
    # No second chance: the task running on a killed worker ends as KilledWorker.
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        pids = list(client.run(os.getpid).values())

        def batch() -> None:
            outcome["result"] = download_manifest(
                manifest, out, url=relay.url, scheduler=client, max_requests=4
            )

        running = threading.Thread(target=batch)
        running.start()
        kill_a_worker_writing_a_series(pids, running)
        running.join(timeout=250)
        assert not running.is_alive()
    result: BatchResult = outcome["result"]
    given_up = result.with_status("failed")
    assert given_up, "the killed worker's series was retried despite allowed-failures=0"
    assert {item.error_type for item in given_up} == {"KilledWorker"}
    assert all(item.error for item in given_up)
    assert len(result.with_status("downloaded")) == len(slow_set) - len(given_up)

    again = download_manifest(manifest, out, url=orthanc.dicomweb_url)
    assert statuses(again) == {
        spec.series_uid: "downloaded" if spec.series_uid in {i.series_uid for i in given_up}
        else "skipped"
        for spec in slow_set
    }  # fmt: skip
    assert_series_exact(out, orthanc, slow_set)
    assert leftovers(out) == []  # the killed item's staging folder is cleared by the rerun


def kill_a_worker_writing_a_series(pids: Sequence[int], running: threading.Thread) -> int:
    """SIGKILL the first worker seen with a file open in a staging folder; its pid."""
    while running.is_alive():
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                if any(".partial" in f.path for f in psutil.Process(pid).open_files()):
                    os.kill(pid, signal.SIGKILL)
                    return pid
        time.sleep(0.005)
    raise AssertionError("no worker was caught writing a series")


def test_cli_dask_workers_runs_a_local_cluster_and_exits_1_on_a_failure(
    main: Callable[[list[str]], int], orthanc: OrthancServer, corpus: Corpus, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
):  # fmt: skip
    pytest.importorskip("distributed")
    unknown = f"{BETA_RLE.study_uid}.77"
    manifest = write_csv(
        tmp_path / "m.csv", [(BETA_RLE.study_uid, ""), (BETA_RLE.study_uid, unknown)]
    )
    report = tmp_path / "report.csv"
    argv = [
        "--url", orthanc.dicomweb_url, "--retries", "0", "batch", str(manifest),
        "-o", str(tmp_path / "out"), "--dask-workers", "2", "--max-requests", "2",
        "--report", str(report),
    ]  # fmt: skip
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("Batch of 4 items: 3 downloaded, 0 skipped, 1 failed")
    assert f"line 3, series {unknown}: DicomWebHTTPError" in captured.err
    assert "1 of 4 items failed; see" in captured.err
    assert_series_exact(tmp_path / "out", orthanc, [BETA_MULTIFRAME, BETA_RLE, BETA_DEFLATED])
    failed = [r for r in csv.DictReader(report.open()) if r["status"] == "failed"]
    assert [(r["SeriesInstanceUID"], r["error_type"]) for r in failed] == [
        (unknown, "DicomWebHTTPError")
    ]
