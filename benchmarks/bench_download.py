"""Series and study downloads to disk: aiodicomweb against curl and dicomweb-client.

One run, one Orthanc on loopback, generated data; every case over plain http and
over https through an nginx TLS front (`tests/support/tls.py`) in front of that
same Orthanc. Cases run in child processes (peak RSS and CPU per case). Usage:
`python benchmarks/bench_download.py [--quick] [--runs N] [--no-gb] [--no-https] [--out DIR]`.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from _common import (
    ACCEPT_SERIES,
    SCRATCH,
    HttpsFront,
    Measurement,
    SeriesSpec,
    machine,
    measure,
    start_https,
    start_orthanc,
    table,
    upload,
)

from tests.support.orthanc import OrthancServer

WORKER = str(Path(__file__).with_name("_download_worker.py"))
SOP_INSTANCE_UID = "00080018"
# curl's parallelism in the per-instance baseline (the target: >= 0.9x of it).
CURL_PARALLEL_MAX = 8


@dataclass(frozen=True)
class Origin:
    """One way to reach the benchmark's Orthanc: directly (http) or through nginx (https)."""

    scheme: str
    base: str
    curl_tls: tuple[str, ...] = ()  # `--cacert CA` for https
    env: Mapping[str, str] | None = None  # the CA for the Python clients


@dataclass(frozen=True)
class Case:
    """One row: what runs, and which curl row of its own scheme it is compared with."""

    name: str
    origin: Origin
    argv: Sequence[str]
    # "whole": against curl fetching the series (study: its series) as raw bodies;
    # "instances": against curl fetching the same instances one GET each.
    shape: str = "whole"


@dataclass
class Row:
    """A case and its measurement."""

    case: Case
    result: Measurement

    @property
    def is_curl(self) -> bool:
        return self.case.name.startswith("curl")


def curl_series(origin: Origin, url: str) -> list[str]:
    return [
        "curl",
        "-sS",
        "--fail",
        *origin.curl_tls,
        "-H",
        f"Accept: {ACCEPT_SERIES}",
        "-o",
        "{OUT}/raw.bin",
        "-w",
        '{"seconds": %{time_total}}\\n',
        url,
    ]  # curl's own timer, as for the others


def curl_parallel(origin: Origin, urls: list[str], parallel_max: int | None = None) -> list[str]:
    """One curl fetching `urls` in parallel (`-Z`), each to its own file under {OUT}."""
    argv = ["curl", "-sS", "--fail", "-Z", *origin.curl_tls, "-H", f"Accept: {ACCEPT_SERIES}"]
    if parallel_max is not None:
        argv += ["--parallel-max", str(parallel_max)]
    argv += ["--output-dir", "{OUT}"]  # short `-o` names: 2,000 URLs stay well under ARG_MAX
    for n, url in enumerate(urls):
        argv += [url, "-o", f"raw{n:06d}.bin"]
    return argv


def worker(case: str, origin: Origin, study: str, series: str) -> list[str]:
    return [sys.executable, WORKER, case, origin.base, study, series, "{OUT}"]


def instance_paths(server: OrthancServer, study: str, series: Sequence[str]) -> list[str]:
    """Every instance's WADO-RS path (after the DICOMweb root), in QIDO order.

    Listed once, before any timing and straight from Orthanc: the curl baseline
    is handed its URLs, while aiodicomweb's per_instance rows list them themselves.
    """
    paths = []
    for series_uid in series:
        resource = f"/studies/{study}/series/{series_uid}/instances"
        found = server.rest_json("GET", f"/dicom-web{resource}?includefield={SOP_INSTANCE_UID}")
        assert isinstance(found, list)
        paths += [f"{resource}/{item[SOP_INSTANCE_UID]['Value'][0]}" for item in found]
    return paths


def listed(server: OrthancServer, specs: Sequence[SeriesSpec]) -> list[str]:
    """`instance_paths` of uploaded series, checked whole (a QIDO limit would skew curl's row)."""
    paths = instance_paths(server, specs[0].study_uid, [s.series_uid for s in specs])
    expected = sum(s.instances for s in specs)
    if len(paths) != expected:
        raise RuntimeError(f"QIDO listed {len(paths)} instances, {expected} were uploaded")
    return paths


def series_cases(
    origins: list[Origin], spec: SeriesSpec, instances: list[str], dwc: bool
) -> list[Case]:
    """A series' rows, every scheme's after the other's, each with its own curl rows."""
    study, series = spec.study_uid, spec.series_uid
    cases = []
    for origin in origins:
        url = f"{origin.base}/studies/{study}/series/{series}"
        urls = [origin.base + path for path in instances]
        cases += [
            Case("curl -> one file", origin, curl_series(origin, url)),
            Case("aiodicomweb multipart", origin, worker("aio-multipart", origin, study, series)),
            Case(f"curl -Z per instance ({CURL_PARALLEL_MAX} at a time)", origin,
                 curl_parallel(origin, urls, CURL_PARALLEL_MAX), "instances"),
            Case("aiodicomweb per_instance", origin,
                 worker("aio-per-instance", origin, study, series), "instances"),
        ]  # fmt: skip
        if dwc:
            cases += [
                Case("dicomweb-client retrieve_series+save_as", origin,
                     worker("dwc-retrieve", origin, study, series)),
                Case("aiodicomweb.compat retrieve_series+save_as", origin,
                     worker("compat-dwc-retrieve", origin, study, series)),
                Case("dicomweb-client iter_series+save_as", origin,
                     worker("dwc-iter", origin, study, series)),
            ]  # fmt: skip
    return cases


def study_cases(
    origins: list[Origin], specs: list[SeriesSpec], instances: list[str]
) -> list[Case]:
    """A study's rows, every scheme's after the other's, each with its own curl rows."""
    study = specs[0].study_uid
    cases = []
    for origin in origins:
        series_urls = [f"{origin.base}/studies/{study}/series/{s.series_uid}" for s in specs]
        urls = [origin.base + path for path in instances]
        cases += [
            Case("curl -Z, series in parallel", origin, curl_parallel(origin, series_urls)),
            Case("aiodicomweb download_study", origin, worker("aio-study", origin, study, "-")),
            Case(f"curl -Z per instance ({CURL_PARALLEL_MAX} at a time)", origin,
                 curl_parallel(origin, urls, CURL_PARALLEL_MAX), "instances"),
            Case("aiodicomweb download_study per_instance", origin,
                 worker("aio-study-per-instance", origin, study, "-"), "instances"),
            Case("dicomweb-client retrieve_study+save_as", origin,
                 worker("dwc-retrieve-study", origin, study, "-")),
            Case("dicomweb-client iter_study+save_as", origin,
                 worker("dwc-iter-study", origin, study, "-")),
        ]  # fmt: skip
    return cases


def run_cases(cases: list[Case], mb: float, runs: int, out: Path) -> list[Row]:
    specs = [(case.name, case.argv, case.origin.env) for case in cases]
    results = measure(specs, mb, runs, out_root=out)
    return [Row(case, result) for case, result in zip(cases, results, strict=True)]


def report(title: str, rows: list[Row]) -> str:
    """One table: every row next to the curl row of its own scheme and shape."""

    def curl_of(row: Row) -> Measurement | None:
        return next((r.result for r in rows if r.is_curl and r.case.origin == row.case.origin
                     and r.case.shape == row.case.shape), None)  # fmt: skip

    def dwc_of(row: Row) -> Measurement | None:
        return next((r.result for r in rows if "retrieve" in r.case.name
                     and r.case.origin == row.case.origin), None)  # fmt: skip

    lines = []
    for row in rows:
        r, curl, dwc = row.result, curl_of(row), dwc_of(row)
        lines.append(
            [
                r.name,
                row.case.origin.scheme,
                f"{r.megabytes:.0f}",
                f"{r.wall:.3f}",
                f"{r.inproc:.3f}" if r.inproc else "-",
                f"{r.rate:.0f}",
                f"{r.rate / curl.rate:.2f}x" if curl else "-",
                f"{r.rate / dwc.rate:.1f}x" if dwc else "-",
                f"{r.cpu:.2f}",
                f"{r.cpu_per_gb:.2f}",
                f"{r.cpu_per_gb / curl.cpu_per_gb:.2f}x" if curl else "-",
                f"{r.peak_rss:.0f}",
            ]
        )
    header = [
        "case",
        "scheme",
        "MB",
        "wall s",
        "in-process s",
        "MB/s",
        "vs curl",
        "vs dwc retrieve",
        "process CPU s",
        "CPU s/GB",
        "CPU vs curl",
        "peak RSS MB",
    ]
    return f"### {title}\n\n{table(lines, header)}\n"


NOTES = """\
MB = 10^6 bytes; MB/s from the in-process transfer time (curl: its time_total; curl -Z: \
its wall time, start included); medians of {runs} runs after 1 warm-up, in rounds \
(each round runs every case once).
`vs curl` and `CPU vs curl` compare each row with the curl row of the same scheme: \
per_instance rows with `curl -Z per instance` (one `URL -o FILE` pair per instance, \
{parallel} at a time, the URLs listed by QIDO before the timing; aiodicomweb's \
per_instance time includes its own QIDO listing), the others with curl writing the raw \
series (study: each series, `-Z`) to one file. `vs dwc retrieve`: against \
dicomweb-client's retrieve row of the same scheme.
`process CPU s`: user + sys of the whole child (`os.wait4`; for Python, interpreter start \
and imports included). `CPU s/GB`: CPU per GB moved, of the transfer alone where the \
child measures it (Python workers: `getrusage(RUSAGE_SELF)` around the transfer, every \
thread included), else of the whole child (curl, start included).
https: nginx ({https}) terminating TLS in front of the same Orthanc, throw-away CA given \
to curl with `--cacert`, to aiodicomweb with `SSL_CERT_FILE`, to dicomweb-client with \
`REQUESTS_CA_BUNDLE`.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small data, few runs")
    parser.add_argument("--runs", type=int, default=None,
                        help="measured runs per case (default: 5, or 2 with --quick)")  # fmt: skip
    parser.add_argument("--no-gb", action="store_true", help="skip the ~1 GB series")
    parser.add_argument("--no-https", action="store_true", help="plain http rows only")
    parser.add_argument("--out", type=Path, default=SCRATCH,
                        help="where the clients write (default: a folder on the repo's disk; "
                        "/dev/shm takes the filesystem out of the comparison)")  # fmt: skip
    args, _ = parser.parse_known_args()  # `run_all` passes every benchmark's options
    runs = args.runs or (2 if args.quick else 5)
    scale = 4 if args.quick else 1
    SCRATCH.mkdir(exist_ok=True)
    series = SeriesSpec(study=9001, series=1, instances=200 // scale, rows=512, columns=512)
    study = [
        SeriesSpec(study=9002, series=n, instances=100 // scale, rows=512, columns=512)
        for n in range(1, 5)
    ]
    big = SeriesSpec(study=9003, series=1, instances=2000 // scale, rows=512, columns=512)
    out = [
        f"## Download benchmark, {datetime.date.today()}",
        "",
        f"Machine: {machine()}. Output written to {args.out}.",
        "",
        NOTES.format(
            runs=runs,
            parallel=CURL_PARALLEL_MAX,
            https="not measured: --no-https" if args.no_https else "1 process, TLS 1.2/1.3",
        ),
    ]
    out_root = Path(tempfile.mkdtemp(dir=args.out))
    server: OrthancServer | None = None
    https: HttpsFront | None = None
    try:
        server = start_orthanc()
        origins = [Origin("http", server.dicomweb_url)]
        if not args.no_https:
            https = start_https(server)
            origins.append(
                Origin("https", https.dicomweb_url, tuple(https.curl_args()), https.env)
            )

        def section(title: str, cases: list[Case], mb: float, case_runs: int) -> None:
            out.append(report(title, run_cases(cases, mb, case_runs, out_root)))
            print(out[-1], flush=True)

        mb = upload(server, [series])
        cases = series_cases(origins, series, listed(server, [series]), True)
        section(f"Series, {series.instances} instances", cases, mb, runs)
        mb = upload(server, study)
        cases = study_cases(origins, study, listed(server, study))
        section(f"Study, 4 x {study[0].instances} instances", cases, mb, runs)
        if not args.no_gb:
            mb = upload(server, [big])
            cases = series_cases(origins, big, listed(server, [big]), False)
            big_runs = max(min(2, runs), runs // 2)  # 1 GB a run: fewer runs
            section(f"Large series, {big.instances} instances", cases, mb, big_runs)
    finally:
        if https is not None:
            https.stop()
        if server is not None:
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
