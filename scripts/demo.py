"""The README's first command (`nox -s demo`): aiodicomweb end to end against a local Orthanc.

Starts a throw-away Orthanc with its DICOMweb plugin, writes a generated study
(4 series x 75 instances of 512x512, 16-bit: 157 MB) to a temporary folder,
then drives the `aiodicomweb` command line through its `main()`, exactly what
the shell runs:

1. store the folder (STOW-RS, concurrent requests, progress);
2. search for it (QIDO-RS tables);
3. download the study, series concurrently, with a progress display (WADO-RS);
4. verify every downloaded file byte for byte against the file the generator
   wrote, matched by SOPInstanceUID;
5. delete the study (Orthanc's REST API) and show that QIDO no longer finds it.

Then it prints a summary with the throughput each command reported (earlier
writes are flushed to disk before each transfer, so that its figure is its
own). Temporary folders and the server are removed on the way out; with
--keep-server the sample study is stored again and Orthanc keeps running until
Ctrl-C, to explore with the command line. The exit status is non-zero if any
step fails.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pydicom

from aiodicomweb import DicomWebClient, cli
from tests.support.dicomgen import SeriesSpec, generate_series
from tests.support.orthanc import OrthancServer, OrthancUnavailableError

STUDY = 4242
SERIES = 4
INSTANCES_PER_SERIES = 75
ROWS = COLUMNS = 512  # 157 MB: a download long enough to time
MB = 1_000_000
EXIT_INTERRUPTED = 130  # the command line's status after Ctrl-C
T = TypeVar("T")


class DemoError(Exception):
    """A step did not do what it should."""


class Tee(io.StringIO):
    """Keeps what is written to it, and writes it through to `stream` too."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(text)
        return super().write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()


def step(title: str, action: Callable[[], T]) -> T:
    """Run one titled step."""
    print(f"\n== {title}", flush=True)
    return action()


def run_cli(*args: str) -> list[str]:
    """`aiodicomweb ARGS` through the command's own `main()`; returns its output lines.

    The URL is in DICOMWEB_URL.
    """
    print(f"$ aiodicomweb {' '.join(args)}", flush=True)
    output = Tee(sys.stdout)
    with contextlib.redirect_stdout(output):
        status = cli.main(list(args))
    if status == EXIT_INTERRUPTED:
        raise KeyboardInterrupt
    if status != 0:
        raise DemoError(f"`aiodicomweb {args[0]}` exited with status {status}")
    return output.getvalue().splitlines()


def transfer_figure(lines: list[str], verb: str) -> str:
    """The command's own summary of a transfer: "Stored 300 instances (157.5 MB) in ..."."""
    summaries = [line for line in lines if line.startswith(f"{verb} ")]
    if not summaries:
        raise DemoError(f"the command printed no line starting with {verb!r}")
    return summaries[-1].partition(", into ")[0]  # the folder is gone by the summary


def generate(folder: Path) -> dict[str, Path]:
    """Write the sample study, one folder per series; returns SOPInstanceUID -> file."""
    written: dict[str, Path] = {}
    for number in range(1, SERIES + 1):
        spec = SeriesSpec(
            study=STUDY,
            series=number,
            instances=INSTANCES_PER_SERIES,
            rows=ROWS,
            columns=COLUMNS,
            study_description="aiodicomweb demo",
            patient_name="DEMO^PATIENT",
            patient_id="DEMO-1",
        )
        series_folder = folder / f"series{number}"
        series_folder.mkdir(parents=True)
        for index, instance in enumerate(generate_series(spec)):
            path = series_folder / f"image{index:04d}.dcm"
            path.write_bytes(instance.data)
            written[instance.sop_instance_uid] = path
    size = sum(path.stat().st_size for path in written.values())
    print(f"{len(written)} instances in {SERIES} series, {size / MB:.1f} MB, in {folder}")
    return written


def verify(download: Path, originals: dict[str, Path]) -> int:
    """Each downloaded file equals the generated file of its SOPInstanceUID; returns the count."""
    files = sorted(download.rglob("*.dcm"))
    seen: set[str] = set()
    for path in files:
        sop = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        if sop not in originals:
            raise DemoError(f"{path} holds an instance that was never stored: {sop}")
        if path.read_bytes() != originals[sop].read_bytes():
            raise DemoError(f"{path} differs from {originals[sop]}")
        seen.add(sop)
    if len(seen) != len(files) or seen != set(originals):
        missing = len(set(originals) - seen)
        raise DemoError(f"{len(files)} files, {missing} instances missing or duplicated")
    print(f"{len(files)} of {len(originals)} files byte-identical to the generated ones")
    return len(files)


def search(study_uid: str) -> None:
    """The study by patient, then its series."""
    run_cli("search", "studies", "-m", "PatientID=DEMO-1")
    run_cli("search", "series", "--study", study_uid)


def delete_and_check(url: str, study_uid: str) -> None:
    """Delete with the Orthanc strategy, show the empty search, and check it."""
    run_cli("delete", "study", study_uid, "--delete-strategy", "orthanc")
    run_cli("search", "studies", "-m", f"StudyInstanceUID={study_uid}")
    with DicomWebClient(url) as client:
        if client.search_studies({"StudyInstanceUID": study_uid}):
            raise DemoError("QIDO still finds the deleted study")


def flush_writes() -> None:
    """Put earlier writes on disk, so that the next transfer's figure is its own.

    Without this, the download paid for flushing the sample and Orthanc's copy,
    and its figure varied by half from run to run.
    """
    if hasattr(os, "sync"):  # not on Windows
        os.sync()


def run(server: OrthancServer, work: Path) -> None:
    """Every step in order; raises DemoError at the first that fails."""
    study_uid = SeriesSpec(study=STUDY, series=1, instances=1).study_uid
    source, download = work / "source", work / "download"
    originals = step("Generate a sample study", lambda: generate(source))
    flush_writes()
    stored = step("Store it (STOW-RS)", lambda: run_cli("store", str(source)))
    step("Search (QIDO-RS)", lambda: search(study_uid))
    flush_writes()
    downloaded = step(
        "Download the study, four series at once (WADO-RS)",
        lambda: run_cli("download", study_uid, "-o", str(download), "--series-concurrency", "4"),
    )
    count = step("Verify every byte", lambda: verify(download, originals))
    step("Delete it and search again", lambda: delete_and_check(server.dicomweb_url, study_uid))
    print("\n== Summary (the throughput each command reported)")
    print(f"  {count} instances: stored, found, downloaded, verified, deleted")
    print(f"  store:    {transfer_figure(stored, 'Stored')}")
    print(f"  download: {transfer_figure(downloaded, 'Downloaded')}")


def cli_hint() -> str:
    """Where `aiodicomweb` is, when it comes with the interpreter running the demo."""
    script = Path(sys.executable).parent / "aiodicomweb"
    if not script.exists():
        return "  (or: python -m aiodicomweb, from this folder)"
    with contextlib.suppress(ValueError):
        script = script.relative_to(Path.cwd())
    return f"  (aiodicomweb is {script}, in the demo's environment)"


def keep_serving(server: OrthancServer, source: Path) -> None:
    """Store the sample study again and keep Orthanc running until Ctrl-C."""
    with DicomWebClient(server.dicomweb_url) as client:
        stored = client.store_directory(source)
    if not stored.ok:
        raise DemoError(f"storing the sample study again failed: {stored.summary()}")
    url = server.dicomweb_url
    print("\n== Orthanc keeps running, with the sample study stored again, until Ctrl-C")
    print(f"DICOMweb URL: {url}")
    print(f"  $ aiodicomweb --url {url} search studies")
    print(cli_hint(), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nStopping Orthanc", flush=True)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/demo.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--keep-server",
        action="store_true",
        help="after the demo, store the sample study again, print the server's DICOMweb URL "
        "and keep Orthanc running until Ctrl-C",
    )
    return parser.parse_args(argv)


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so that Orthanc and the temporary folders go too."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, _terminate)
    started = time.perf_counter()
    try:
        with (
            OrthancServer(purpose="the demo") as server,
            tempfile.TemporaryDirectory(prefix="demo-") as work,
        ):
            os.environ["DICOMWEB_URL"] = server.dicomweb_url
            print(f"Orthanc is up (throw-away storage in {server.workdir})")
            print(f"$ export DICOMWEB_URL={server.dicomweb_url}")
            run(server, Path(work))
            print(f"  total:    {time.perf_counter() - started:.1f} s")
            if args.keep_server:
                keep_serving(server, Path(work) / "source")
    except (DemoError, OrthancUnavailableError) as error:
        print(f"\nDEMO FAILED: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nDemo interrupted; Orthanc stopped, temporary folders removed", file=sys.stderr)
        return EXIT_INTERRUPTED
    print("Orthanc stopped, temporary folders removed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
