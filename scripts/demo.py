"""The README's first command (`nox -s demo`): aiodicomweb end to end against a local Orthanc.

Starts a throw-away Orthanc with its DICOMweb plugin, writes a generated study
(4 series x 75 instances of 256x256, 16-bit) to a temporary folder, then drives
the `aiodicomweb` command line through its `main()`, exactly what the shell
runs:

1. store the folder (STOW-RS, concurrent requests, progress);
2. search for it (QIDO-RS tables);
3. download the study, series concurrently, with a progress display (WADO-RS);
4. verify every downloaded file byte for byte against the file the generator
   wrote, matched by SOPInstanceUID;
5. delete the study (Orthanc's REST API) and show that QIDO no longer finds it.

Then it prints a summary with throughput. Temporary folders and the server are
removed on the way out. The exit status is non-zero if any step fails.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pydicom

from aiodicomweb import DicomWebClient, cli
from tests.support.dicomgen import SeriesSpec, generate_series
from tests.support.orthanc import OrthancServer, OrthancUnavailableError

STUDY = 4242
SERIES = 4
INSTANCES_PER_SERIES = 75
MB = 1_000_000
T = TypeVar("T")


class DemoError(Exception):
    """A step did not do what it should."""


def step(title: str, action: Callable[[], T]) -> tuple[T, float]:
    """Run one titled step; returns its result and its wall time."""
    print(f"\n== {title}", flush=True)
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def run_cli(*args: str) -> None:
    """`aiodicomweb ARGS`, through the command's own `main()` (the URL is in DICOMWEB_URL)."""
    print(f"$ aiodicomweb {' '.join(args)}", flush=True)
    status = cli.main(list(args))
    if status != 0:
        raise DemoError(f"`aiodicomweb {args[0]}` exited with status {status}")


def generate(folder: Path) -> dict[str, Path]:
    """Write the sample study, one folder per series; returns SOPInstanceUID -> file."""
    written: dict[str, Path] = {}
    for number in range(1, SERIES + 1):
        spec = SeriesSpec(
            study=STUDY,
            series=number,
            instances=INSTANCES_PER_SERIES,
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


def run(server: OrthancServer, work: Path) -> None:
    """Every step in order; raises DemoError at the first that fails."""
    study_uid = SeriesSpec(study=STUDY, series=1, instances=1).study_uid
    source, download = work / "source", work / "download"
    originals, _ = step("Generate a sample study", lambda: generate(source))
    size = sum(path.stat().st_size for path in originals.values()) / MB
    _, store_s = step("Store it (STOW-RS)", lambda: run_cli("store", str(source)))
    step("Search (QIDO-RS)", lambda: search(study_uid))
    _, download_s = step(
        "Download the study, four series at once (WADO-RS)",
        lambda: run_cli("download", study_uid, "-o", str(download), "--series-concurrency", "4"),
    )
    count, _ = step("Verify every byte", lambda: verify(download, originals))
    step("Delete it and search again", lambda: delete_and_check(server.dicomweb_url, study_uid))
    print("\n== Summary (wall time of each command)")
    print(f"  {count} instances, {size:.1f} MB: stored, found, downloaded, verified, deleted")
    print(f"  store:    {store_s:.2f} s, {size / store_s:.1f} MB/s")
    print(f"  download: {download_s:.2f} s, {size / download_s:.1f} MB/s")


def main() -> int:
    started = time.perf_counter()
    try:
        with OrthancServer() as server, tempfile.TemporaryDirectory(prefix="demo-") as work:
            os.environ["DICOMWEB_URL"] = server.dicomweb_url
            print(f"Orthanc is up (throw-away storage in {server.workdir})")
            print(f"$ export DICOMWEB_URL={server.dicomweb_url}")
            run(server, Path(work))
    except (DemoError, OrthancUnavailableError) as error:
        print(f"\nDEMO FAILED: {error}", file=sys.stderr)
        return 1
    print(
        f"  total:    {time.perf_counter() - started:.1f} s; Orthanc stopped, temp folders removed"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
