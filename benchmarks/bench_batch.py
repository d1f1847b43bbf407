"""A 40-series manifest on Dask against the same manifest in-process (`aiodicomweb.batch`).

One Orthanc on loopback, generated data (10 studies of 4 series; the manifest names 5
studies and the 20 series of the other 5). Every case runs in a child process (this
script with `--child CASE`) that times the `download_manifest` call alone, and the
cases take turns, round after round, so that a busy machine slows them alike:

- `in-process`: the default mode, `max_requests` 4 (the default);
- `--dask-workers 2`: `workers=2`, what the command does: a LocalCluster of 2 worker
  processes (2 threads each, for 4 series in flight), started and stopped in the call;
- `cluster running`: the same cluster, started before the timing (its workers having
  imported aiodicomweb, as after an earlier batch) and passed as `scheduler=`: Dask's own
  cost per batch;
- `cluster running, Dask defaults`: likewise, with Dask's default worker settings
  (statistical profiler on, `MALLOC_TRIM_THRESHOLD_=65536`) instead of the batch's.

Usage: `python benchmarks/bench_batch.py [--quick] [--runs N] [--instances N] [--out DIR]`
(`--instances 96`: series of 50 MB, closer to a CT series). The goal:
`cluster running` within 1.15x of `in-process`.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import importlib
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import SCRATCH, SeriesSpec, machine, run_child, start_orthanc, table, upload

CASES = {
    "in-process": "in-process, max_requests 4",
    "dask-workers": "`--dask-workers 2` (cluster start and stop included)",
    "dask-running": "dask, cluster running (2 workers x 2 threads)",
    "dask-defaults": "dask, cluster running, Dask's default worker settings",
}
WORKERS = 2
# What `workers=N` sets for the clusters it starts (aiodicomweb/batch/_dask.py).
BATCH_SETTINGS = {
    "distributed.worker.profile.enabled": False,
    "distributed.nanny.pre-spawn-environ": {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1,
                                            "OPENBLAS_NUM_THREADS": 1},
}  # fmt: skip


def specs(quick: bool, instances: int) -> list[SeriesSpec]:
    """10 studies x 4 series of `instances` instances of 512 x 512 (0.52 MB each)."""
    size, instances = (256, 2) if quick else (512, instances)
    return [
        SeriesSpec(study=8100 + study, series=series, instances=instances, rows=size, columns=size)
        for study in range(1, 11)
        for series in range(1, 5)
    ]


def write_manifest(path: Path, series: list[SeriesSpec]) -> None:
    """Study rows for the first 5 studies, series rows for the others' 20 series."""
    studies = sorted({spec.study_uid for spec in series})
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["StudyInstanceUID", "SeriesInstanceUID"])
        writer.writerows([uid, ""] for uid in studies[:5])
        writer.writerows(
            [spec.study_uid, spec.series_uid] for spec in series if spec.study_uid in studies[5:]
        )


def cpu_seconds() -> float:
    """User + sys time of this process and of its children, live (Dask workers and their
    nannies) or reaped (those of a cluster already stopped)."""
    import psutil

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def child(case: str, url: str, manifest: str, out: str) -> int:
    """One timed batch; prints `{"seconds": ..., "cpu_seconds": ...}` on its last line."""
    from aiodicomweb.batch import BatchResult, download_manifest

    result: BatchResult
    if case in ("dask-running", "dask-defaults"):
        import dask
        import distributed

        settings: dict[str, Any] = BATCH_SETTINGS if case == "dask-running" else {}
        with (
            dask.config.set(settings),
            distributed.LocalCluster(n_workers=WORKERS, threads_per_worker=2,
                                     dashboard_address="127.0.0.1:0") as cluster,
            distributed.Client(cluster, set_as_default=False) as client,
        ):  # fmt: skip
            client.wait_for_workers(WORKERS)
            client.run(importlib.import_module, "aiodicomweb.batch._dask")  # as after a batch
            cpu, started = cpu_seconds(), time.perf_counter()
            result = download_manifest(manifest, out, url=url, scheduler=client)
            seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    else:
        workers = WORKERS if case == "dask-workers" else None
        cpu, started = cpu_seconds(), time.perf_counter()
        result = download_manifest(manifest, out, url=url, workers=workers)
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    if not result.ok or result.downloaded != len(result.items):
        raise SystemExit(f"{case}: {result.summary()}")
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu}), flush=True)
    return 0


Figures = dict[str, list[tuple[float, float]]]


def run_rounds(url: str, manifest: Path, work: Path, runs: int) -> Figures:
    """One warm-up round, then `runs` rounds in which every case runs once, in turn;
    (seconds, CPU seconds) of each run."""
    figures: Figures = {case: [] for case in CASES}
    for round_number in range(runs + 1):
        for case in CASES:
            out = Path(tempfile.mkdtemp(dir=work))
            os.sync()  # no earlier run's dirty pages to flush during this one
            try:
                run = run_child([sys.executable, __file__, "--child", case, url, str(manifest),
                                 str(out / "batch")])  # fmt: skip
            finally:
                shutil.rmtree(out, ignore_errors=True)
            if round_number:
                figures[case].append((run.report["seconds"], run.report["cpu_seconds"]))
    return figures


def report(figures: Figures, megabytes: float) -> str:
    def medians(case: str) -> tuple[float, float]:
        runs = figures[case]
        return statistics.median(s for s, _ in runs), statistics.median(c for _, c in runs)

    base, base_cpu = medians("in-process")
    rows = []
    for case, runs in figures.items():
        seconds, cpu = medians(case)
        rows.append([CASES[case], f"{seconds:.2f}", f"{min(s for s, _ in runs):.2f}",
                     f"{megabytes / seconds:.0f}", f"{seconds / base:.2f}x", f"{cpu:.2f}",
                     f"{cpu / base_cpu:.2f}x"])  # fmt: skip
    header = ["case", "median s", "best s", "MB/s", "vs in-process", "CPU s", "CPU vs in-process"]
    return table(rows, header)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", choices=sorted(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="small series, fewer runs")
    parser.add_argument("--instances", type=int, default=24,
                        help="instances per series (default 24: 12.6 MB a series)")  # fmt: skip
    parser.add_argument("--runs", type=int, default=None, help="measured runs (default 5)")
    parser.add_argument("--out", type=Path, default=SCRATCH, help="where the batches write")
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()  # `run_all` passes every benchmark's options
    if args.child:
        return child(args.child, *args.rest)
    runs = args.runs or (2 if args.quick else 5)
    series = specs(args.quick, args.instances)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=args.out))
    server = None
    try:
        server = start_orthanc()
        megabytes = upload(server, series)
        manifest = work / "manifest.csv"
        write_manifest(manifest, series)
        figures = run_rounds(server.dicomweb_url, manifest, work, runs)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    text = "\n".join([
        f"## Batch benchmark, {datetime.date.today()}", "",
        f"Machine: {machine()}. {megabytes:.0f} MB in {len(series)} series, written to "
        f"{args.out}; median of {runs} rounds after a warm-up. Times are the "
        "`download_manifest` call alone, measured in its process; CPU is that of the "
        "process and its children (Dask's workers and nannies) over the call; Orthanc's "
        "is not counted.", "",
        report(figures, megabytes),
    ])  # fmt: skip
    print(text, flush=True)
    results = Path(__file__).with_name("results")
    results.mkdir(exist_ok=True)
    (results / "batch.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
