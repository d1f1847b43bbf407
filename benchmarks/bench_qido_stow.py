"""QIDO-RS latency and STOW-RS throughput: aiodicomweb against curl and dicomweb-client.

One run, one Orthanc on loopback. QIDO: the same URLs, curl per query (one
process each, connect included) against one warm aiodicomweb client, and the
in-process cost of aiodicomweb per query against a raw httpx request. STOW: a
~100 MB folder, curl POSTing the same prebuilt multipart body (with `Expect:`),
dicomweb-client `store_instances`, aiodicomweb `store_directory`.
Usage: `python benchmarks/bench_qido_stow.py [--quick]`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx
from _common import SCRATCH, SeriesSpec, machine, start_orthanc, table, upload

from aiodicomweb import AsyncDicomWebClient
from aiodicomweb._multipart import MultipartEncoder
from tests.support.corpus import delete_study
from tests.support.dicomgen import generate_series


def curl_ms(url: str, runs: int) -> float:
    """Median per-transfer time of `runs` GETs in one curl process (one warm connection)."""
    argv = ["curl", "-sS", "--fail", "-H", "Accept: application/dicom+json"]
    for _ in range(runs + 1):
        argv += ["-o", "/dev/null", "-w", "%{time_total}\\n", url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    timings = [float(line) * 1000 for line in out.split()][1:]  # drop the cold first one
    return statistics.median(timings)


async def client_ms(
    base: str, queries: list[tuple[str, dict]], runs: int
) -> list[tuple[float, float]]:
    """(aiodicomweb ms, raw httpx ms) per query, same process, warm connections."""
    results = []
    async with AsyncDicomWebClient(base) as client, httpx.AsyncClient() as raw:
        for method, kwargs in queries:
            url = kwargs.pop("_url")
            ours, theirs = [], []
            for _ in range(runs):
                started = time.perf_counter()
                await getattr(client, method)(**kwargs)
                ours.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                (await raw.get(url, headers={"Accept": "application/dicom+json"})).json()
                theirs.append((time.perf_counter() - started) * 1000)
            results.append((statistics.median(ours), statistics.median(theirs)))
    return results


def qido(base: str, study: SeriesSpec, runs: int) -> str:
    cases = [
        ("studies?PatientName=TEST^SCRATCH", "search_studies",
         {"match": {"PatientName": "TEST^SCRATCH"}}),
        (f"studies/{study.study_uid}/series", "search_series", {"study_uid": study.study_uid}),
        (f"studies/{study.study_uid}/series/{study.series_uid}/instances", "search_instances",
         {"study_uid": study.study_uid, "series_uid": study.series_uid}),
    ]  # fmt: skip
    labels = ["/studies?PatientName=...", "/studies/{study}/series",
              f"/studies/{{study}}/series/{{series}}/instances ({study.instances})"]  # fmt: skip
    queries = [(method, {**kwargs, "_url": f"{base}/{path}"}) for path, method, kwargs in cases]
    ours = anyio.run(client_ms, base, queries, runs)
    rows = []
    for (path, _, _), label, (mine, raw) in zip(cases, labels, ours, strict=True):
        curl = curl_ms(f"{base}/{path}", runs)
        rows.append([f"`{label}`", f"{curl:.1f}", f"{raw:.1f}", f"{mine:.1f}",
                     f"{mine - raw:+.2f}", f"{mine - curl:+.1f}"])  # fmt: skip
    header = ["query", "curl ms (warm)", "httpx ms (warm)", "aiodicomweb ms (warm)",
              "aiodicomweb - httpx", "aiodicomweb - curl"]  # fmt: skip
    return f"### QIDO-RS, median of {runs}\n\n{table(rows, header)}\n"


def write_folder(specs: list[SeriesSpec], folder: Path) -> tuple[list[Path], float]:
    paths = []
    for spec in specs:
        for instance in generate_series(spec):
            path = folder / f"{instance.sop_instance_uid}.dcm"
            path.write_bytes(instance.data)
            paths.append(path)
    return paths, sum(p.stat().st_size for p in paths) / 1e6


def prebuilt_body(paths: list[Path], target: Path) -> str:
    encoder = MultipartEncoder()
    with target.open("wb") as out:
        for index, path in enumerate(paths):
            out.write(encoder.part_head(first=index == 0))
            out.write(path.read_bytes())
        out.write(encoder.close_delimiter())
    return encoder.content_type


def stow_worker(case: str, base: str, folder: str) -> float:
    """Runs in a child process; returns the in-process seconds."""
    paths = sorted(Path(folder).glob("*.dcm"))
    if case == "aiodicomweb":

        async def run() -> float:
            async with AsyncDicomWebClient(base) as client:
                started = time.perf_counter()
                result = await client.store_directory(folder)
                assert result.ok and len(result.stored) == len(paths), result.summary()
                return time.perf_counter() - started

        return anyio.run(run)
    import pydicom
    from dicomweb_client.api import DICOMwebClient

    started = time.perf_counter()
    DICOMwebClient(base).store_instances([pydicom.dcmread(p) for p in paths])
    return time.perf_counter() - started


def stow(base: str, server, specs: list[SeriesSpec], runs: int) -> str:
    folder = Path(tempfile.mkdtemp(dir=SCRATCH))
    paths, mb = write_folder(specs, folder)
    body = SCRATCH / "stow-body.bin"
    content_type = prebuilt_body(paths, body)
    rows = []
    cases = {
        "curl POST prebuilt body (Expect: none)": [
            "curl", "-sS", "--fail", "-o", "/dev/null", "-H", "Expect:",
            "-H", f"Content-Type: {content_type}", "-H", "Accept: application/dicom+json",
            "--data-binary", f"@{body}", f"{base}/studies",
        ],
        "aiodicomweb store_directory": [sys.executable, __file__, "--worker", "aiodicomweb", base,
                                        str(folder)],
        "dicomweb-client store_instances (dcmread each)": [sys.executable, __file__, "--worker",
                                                           "dwc", base, str(folder)],
    }  # fmt: skip
    rates: dict[str, float] = {}
    for name, argv in cases.items():
        seconds = []
        for _ in range(runs):
            delete_study(server, specs[0].study_uid)
            started = time.perf_counter()
            out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
            wall = time.perf_counter() - started
            seconds.append(json.loads(out)["seconds"] if out.startswith("{") else wall)
        rates[name] = mb / statistics.median(seconds)
    curl = rates[next(iter(rates))]
    for name, rate in rates.items():
        rows.append([name, f"{mb:.0f}", f"{rate:.0f}", f"{rate / curl:.2f}x"])
    shutil.rmtree(folder, ignore_errors=True)
    body.unlink()
    header = ["case", "MB", "MB/s", "vs curl"]
    title = f"### STOW-RS of a {len(paths)}-file folder, median of {runs}"
    return f"{title}\n\n{table(rows, header)}\n"


def main() -> int:
    if "--worker" in sys.argv:
        case, base, folder = sys.argv[sys.argv.index("--worker") + 1 :][:3]
        print(json.dumps({"seconds": stow_worker(case, base, folder)}))
        return 0
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runs = 3 if args.quick else 15
    SCRATCH.mkdir(exist_ok=True)
    server = start_orthanc()
    out = [f"## QIDO and STOW benchmark, {datetime.date.today()}", ""]
    out += [f"Machine: {machine()}.", ""]
    try:
        searched = SeriesSpec(study=9101, series=1, instances=200, rows=128, columns=128)
        upload(server, [searched])
        out.append(qido(server.dicomweb_url, searched, runs))
        print(out[-1], flush=True)
        count = 50 if args.quick else 200
        specs = [SeriesSpec(study=9102, series=1, instances=count, rows=512, columns=512)]
        out.append(stow(server.dicomweb_url, server, specs, 2 if args.quick else 3))
        print(out[-1], flush=True)
    finally:
        server.stop()
    results = Path(__file__).with_name("results")
    results.mkdir(exist_ok=True)
    (results / "qido_stow.md").write_text("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
