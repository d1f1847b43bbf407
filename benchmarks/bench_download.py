"""Series and study downloads to disk: aiodicomweb against curl and dicomweb-client.

One run, one Orthanc on loopback, generated data. Cases run in child processes
(peak RSS per case). Usage: `python benchmarks/bench_download.py [--quick] [--runs N]`.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import tempfile
from pathlib import Path

from _common import (
    ACCEPT_SERIES,
    SCRATCH,
    Measurement,
    SeriesSpec,
    machine,
    measure,
    start_orthanc,
    table,
    upload,
)

WORKER = str(Path(__file__).with_name("_download_worker.py"))


def curl_series(url: str) -> list[str]:
    return [
        "curl",
        "-sS",
        "--fail",
        "-H",
        f"Accept: {ACCEPT_SERIES}",
        "-o",
        "{OUT}/raw.bin",
        "-w",
        '{"seconds": %{time_total}}\\n',
        url,
    ]  # curl's own timer, as for the others


def curl_parallel(urls: list[str]) -> list[str]:
    argv = ["curl", "-sS", "--fail", "-Z", "-H", f"Accept: {ACCEPT_SERIES}"]
    for n, url in enumerate(urls):
        argv += [url, "-o", f"{{OUT}}/raw{n}.bin"]
    return argv


def worker(case: str, base: str, study: str, series: str) -> list[str]:
    return [sys.executable, WORKER, case, base, study, series, "{OUT}"]


def series_cases(
    base: str, spec: SeriesSpec, mb: float, runs: int, dwc: bool, out: Path
) -> list[Measurement]:
    url = f"{base}/studies/{spec.study_uid}/series/{spec.series_uid}"
    cases = [
        ("curl -> one file", curl_series(url)),
        ("aiodicomweb multipart", worker("aio-multipart", base, spec.study_uid, spec.series_uid)),
        (
            "aiodicomweb per_instance",
            worker("aio-per-instance", base, spec.study_uid, spec.series_uid),
        ),
    ]
    if dwc:
        cases += [
            (
                "dicomweb-client retrieve_series+save_as",
                worker("dwc-retrieve", base, spec.study_uid, spec.series_uid),
            ),
            (
                "dicomweb-client iter_series+save_as",
                worker("dwc-iter", base, spec.study_uid, spec.series_uid),
            ),
        ]
    return [measure(name, mb, argv, runs, out_root=out) for name, argv in cases]


def study_cases(
    base: str, specs: list[SeriesSpec], mb: float, runs: int, out: Path
) -> list[Measurement]:
    study = specs[0].study_uid
    urls = [f"{base}/studies/{study}/series/{s.series_uid}" for s in specs]
    cases = [
        ("curl -Z, series in parallel", curl_parallel(urls)),
        ("aiodicomweb download_study", worker("aio-study", base, study, "-")),
        (
            "aiodicomweb download_study per_instance",
            worker("aio-study-per-instance", base, study, "-"),
        ),
        ("dicomweb-client retrieve_study+save_as", worker("dwc-retrieve-study", base, study, "-")),
        ("dicomweb-client iter_study+save_as", worker("dwc-iter-study", base, study, "-")),
    ]
    return [measure(name, mb, argv, runs, out_root=out) for name, argv in cases]


def report(title: str, results: list[Measurement]) -> str:
    curl = results[0].rate
    dwc = next((r.rate for r in results if "retrieve" in r.name), None)
    rows = []
    for r in results:
        rows.append(
            [
                r.name,
                f"{r.megabytes:.0f}",
                f"{r.wall:.3f}",
                f"{r.inproc:.3f}" if r.inproc else "-",
                f"{r.rate:.0f}",
                f"{r.rate / curl:.2f}x",
                f"{r.rate / dwc:.1f}x" if dwc else "-",
                f"{r.peak_rss:.0f}",
            ]
        )
    header = [
        "case",
        "MB",
        "wall s",
        "in-process s",
        "MB/s",
        "vs curl",
        "vs dwc retrieve",
        "peak RSS MB",
    ]
    return f"### {title}\n\n{table(rows, header)}\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small data, few runs")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-gb", action="store_true", help="skip the ~1 GB series")
    parser.add_argument("--out", type=Path, default=SCRATCH,
                        help="where the clients write (default: a folder on the repo's disk; "
                        "/dev/shm takes the filesystem out of the comparison)")  # fmt: skip
    args, _ = parser.parse_known_args()  # `run_all` passes every benchmark's options
    runs = 2 if args.quick else args.runs
    scale = 4 if args.quick else 1
    SCRATCH.mkdir(exist_ok=True)
    out_root = Path(tempfile.mkdtemp(dir=args.out))
    series = SeriesSpec(study=9001, series=1, instances=200 // scale, rows=512, columns=512)
    study = [
        SeriesSpec(study=9002, series=n, instances=100 // scale, rows=512, columns=512)
        for n in range(1, 5)
    ]
    big = SeriesSpec(study=9003, series=1, instances=2000 // scale, rows=512, columns=512)
    server = start_orthanc()
    out = [
        f"## Download benchmark, {datetime.date.today()}",
        "",
        f"Machine: {machine()}. Output written to {args.out}.",
        "MB = 10^6 bytes; MB/s from the in-process transfer time (curl: its time_total; "
        "curl -Z: wall time); "
        f"medians of {runs} runs after 1 warm-up.",
        "",
    ]
    try:
        base = server.dicomweb_url
        mb = upload(server, [series])
        out.append(
            report(
                f"Series, {series.instances} instances",
                series_cases(base, series, mb, runs, True, out_root),
            )
        )
        print(out[-1], flush=True)
        mb = upload(server, study)
        out.append(
            report(
                f"Study, 4 x {study[0].instances} instances",
                study_cases(base, study, mb, runs, out_root),
            )
        )
        print(out[-1], flush=True)
        if not args.no_gb:
            mb = upload(server, [big])
            out.append(
                report(
                    f"Large series, {big.instances} instances",
                    series_cases(base, big, mb, max(2, runs // 2), False, out_root),
                )
            )
            print(out[-1], flush=True)
    finally:
        server.stop()
        shutil.rmtree(out_root, ignore_errors=True)
        shutil.rmtree(SCRATCH, ignore_errors=True)
    results = Path(__file__).with_name("results")
    results.mkdir(exist_ok=True)
    name = "download-tmpfs.md" if str(args.out).startswith("/dev/shm") else "download.md"
    (results / name).write_text("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
