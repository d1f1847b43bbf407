"""QIDO-RS latency and STOW-RS throughput: aiodicomweb against curl and dicomweb-client.

One run, one Orthanc on loopback. QIDO: the same URLs, in rounds where a curl
process (its first, cold transfer dropped), one warm aiodicomweb client and one
warm raw httpx client take turns; figures are per call on a warm connection.
Then the same over https, through an nginx TLS front in front of that Orthanc
(`--no-https` skips it).
STOW: a ~100 MB folder, curl POSTing the same prebuilt multipart body (with
`Expect:`), dicomweb-client `store_instances`, aiodicomweb `store_directory`.
Usage: `python benchmarks/bench_qido_stow.py [--quick] [--no-https]`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import httpx
from _common import (
    SCRATCH,
    HttpsFront,
    SeriesSpec,
    machine,
    start_https,
    start_orthanc,
    table,
    upload,
)

from aiodicomweb import AsyncDicomWebClient
from aiodicomweb._dicom_json import loads
from aiodicomweb._multipart import MultipartEncoder
from tests.support.corpus import delete_study
from tests.support.dicomgen import generate_series


def curl_times(url: str, runs: int, ca: str | None = None) -> list[float]:
    """Per-transfer ms of `runs` GETs in one curl process, after one dropped cold transfer.

    The URL is repeated in one invocation, so curl reuses its connection (and,
    over https, its TLS session): only the dropped first transfer pays the handshakes.
    """
    argv = ["curl", "-sS", "--fail", "-H", "Accept: application/dicom+json"]
    if ca is not None:
        argv += ["--cacert", ca]
    for _ in range(runs + 1):
        argv += ["-o", "/dev/null", "-w", "%{time_total}\\n", url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return [float(line) * 1000 for line in out.split()][1:]


async def timed(call: Callable[[], Awaitable[object]], runs: int) -> list[float]:
    """Per-call ms of `runs` calls, after one dropped call (Orthanc closes idle
    connections after 1 s, so each round starts warm, as curl's does)."""
    times = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        answer = await call()
        times.append((time.perf_counter() - started) * 1000)
        del answer  # freed outside the timing (30,000 objects for 200 instances)
    return times[1:]


async def qido_rounds(
    base: str, cases: list[tuple[str, str, dict]], rounds: int, runs: int, ca: str | None = None
) -> list[list[float]]:
    """Per case: medians of curl, raw httpx and aiodicomweb, and of the per-round
    differences aiodicomweb - curl and aiodicomweb - httpx.

    The three clients take turns within each round, so that a slow phase of the
    server (this VM's neighbours, Orthanc's own caches) falls on all of them.
    `ca`: the CA file an https `base` is signed by, given to each client.
    """
    results = []
    verify: bool | str = ca or True
    # httpx 0.28 deprecates a path as `verify`: an SSLContext trusting the same CA.
    raw_verify: bool | ssl.SSLContext = ssl.create_default_context(cafile=ca) if ca else True
    async with (
        AsyncDicomWebClient(base, verify=verify) as client,
        httpx.AsyncClient(verify=raw_verify) as raw,
    ):
        for path, method, kwargs in cases:
            url = f"{base}/{path}"

            async def ours(method: str = method, kwargs: dict = kwargs) -> object:
                return await getattr(client, method)(**kwargs)

            async def theirs(url: str = url) -> object:
                response = await raw.get(url, headers={"Accept": "application/dicom+json"})
                return response.json()

            samples: dict[str, list[float]] = {"curl": [], "httpx": [], "ours": []}
            to_curl, to_httpx = [], []
            for _ in range(rounds):
                curl = curl_times(url, runs, ca)
                mine = await timed(ours, runs)
                other = await timed(theirs, runs)
                samples["curl"] += curl
                samples["ours"] += mine
                samples["httpx"] += other
                to_curl.append(statistics.median(mine) - statistics.median(curl))
                to_httpx.append(statistics.median(mine) - statistics.median(other))
            body = (await raw.get(url, headers={"Accept": "application/dicom+json"})).content
            results.append(
                [statistics.median(samples[k]) for k in ("curl", "httpx", "ours")]
                + [statistics.median(to_httpx), statistics.median(to_curl), decode_ms(body)]
            )
    return results


def decode_ms(body: bytes, runs: int = 21) -> float:
    """Median ms aiodicomweb spends turning this body into Python objects (curl does not)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        decoded = loads(body)
        times.append((time.perf_counter() - started) * 1000)
        del decoded  # freed outside the timing, as a caller would keep it a while
    return statistics.median(times)


def qido(
    base: str,
    large: SeriesSpec,
    small: SeriesSpec,
    rounds: int,
    https: HttpsFront | None = None,
    runs: int = 5,
) -> str:
    study = large.study_uid
    cases = [
        ("studies?PatientName=TEST^SCRATCH", "search_studies",
         {"match": {"PatientName": "TEST^SCRATCH"}}),
        (f"studies/{study}/series", "search_series", {"study_uid": study}),
        (f"studies/{study}/series/{small.series_uid}/instances", "search_instances",
         {"study_uid": study, "series_uid": small.series_uid}),
        (f"studies/{study}/series/{large.series_uid}/instances", "search_instances",
         {"study_uid": study, "series_uid": large.series_uid}),
    ]  # fmt: skip
    labels = ["/studies?PatientName=...", "/studies/{study}/series",
              f"/studies/{{study}}/series/{{series}}/instances ({small.instances})",
              f"/studies/{{study}}/series/{{series}}/instances ({large.instances})"]  # fmt: skip
    measured = anyio.run(qido_rounds, base, cases, rounds, runs)
    replayed = replay(base, cases, rounds, runs)
    secure = None
    if https is not None:
        secure = anyio.run(qido_rounds, https.dicomweb_url, cases, rounds, runs, https.ca)
    header = ["query", "curl ms", "httpx ms", "aiodicomweb ms", "aiodicomweb - httpx",
              "aiodicomweb - curl", "of which JSON decoding ms"]  # fmt: skip
    tables = []
    for results in (measured, replayed, secure):
        if results is None:
            continue
        rows = []
        for label, (curl, raw, mine, to_raw, to_curl, decode) in zip(labels, results, strict=True):
            rows.append([f"`{label}`", f"{curl:.2f}", f"{raw:.2f}", f"{mine:.2f}",
                         f"{to_raw:+.2f}", f"{to_curl:+.2f}", f"{decode:.2f}"])  # fmt: skip
        tables.append(table(rows, header))
    title = f"### QIDO-RS, warm connections, {rounds} rounds of {runs} calls each"
    note = (
        "Medians of all calls; the differences are medians of the per-round differences "
        "(curl, aiodicomweb and httpx take turns in each round). curl writes the answer "
        "to /dev/null; the last column is what aiodicomweb spends decoding it into Python "
        "objects (same body, same run)."
    )
    replay_note = (
        "The same answers, recorded from Orthanc and served at once by "
        "`benchmarks/_replay_server.py` (keep-alive, Content-Length): what each client "
        "adds to a query, without Orthanc's own variance."
    )
    https_part = ""
    if secure is not None:
        https_note = (
            "Over https, through nginx terminating TLS in front of the same Orthanc (so curl's "
            "figures include nginx's hop; compare within this table): curl with `--cacert`, "
            "reusing its one connection as above; aiodicomweb with `verify=CA` and "
            "httpx with an SSLContext trusting the same CA, both on warm connections."
        )
        https_part = f"\n{https_note}\n\n{tables[2]}\n"
    return (
        f"{title}\n\nAgainst Orthanc:\n\n{tables[0]}\n\n{note}\n\n{replay_note}\n\n{tables[1]}\n"
        + https_part
    )


def replay(base: str, cases: list[tuple[str, str, dict]], rounds: int, runs: int) -> list:
    """The QIDO rounds again, against Orthanc's recorded answers served at once."""
    answers = {}
    with httpx.Client() as http:
        for path, _, _ in cases:
            url = f"{base}/{path}"
            answer = http.get(url, headers={"Accept": "application/dicom+json"})
            answers[httpx.URL(url).raw_path.decode()] = answer.content.hex()
    SCRATCH.mkdir(exist_ok=True)
    recorded = SCRATCH / "qido-answers.json"
    recorded.write_text(json.dumps(answers))
    server = Path(__file__).with_name("_replay_server.py")
    child = subprocess.Popen([sys.executable, str(server), str(recorded)],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        port = int(child.stdout.readline()) if child.stdout else 0
        replay_base = f"http://127.0.0.1:{port}{urlsplit(base).path}"
        return anyio.run(qido_rounds, replay_base, cases, rounds, runs)
    finally:
        child.kill()
        child.wait()
        recorded.unlink()


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
            "curl", "-sS", "--fail", "-o", "/dev/null", "-w", '{"seconds": %{time_total}}',
            "-H", "Expect:",
            "-H", f"Content-Type: {content_type}", "-H", "Accept: application/dicom+json",
            "--data-binary", f"@{body}", f"{base}/studies",
        ],
        "aiodicomweb store_directory": [sys.executable, __file__, "--worker", "aiodicomweb", base,
                                        str(folder)],
        "dicomweb-client store_instances (dcmread each)": [sys.executable, __file__, "--worker",
                                                           "dwc", base, str(folder)],
    }  # fmt: skip
    rates: dict[str, float] = {}
    try:
        for name, argv in cases.items():
            seconds = []
            for _ in range(runs):  # each reports its own transfer time (curl: time_total)
                delete_study(server, specs[0].study_uid)
                out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
                seconds.append(json.loads(out)["seconds"])
            rates[name] = mb / statistics.median(seconds)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        body.unlink(missing_ok=True)
    curl = rates[next(iter(rates))]
    for name, rate in rates.items():
        rows.append([name, f"{mb:.0f}", f"{rate:.0f}", f"{rate / curl:.2f}x"])
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
    parser.add_argument("--no-https", action="store_true", help="plain http QIDO only")
    args, _ = parser.parse_known_args()  # `run_all` passes every benchmark's options
    SCRATCH.mkdir(exist_ok=True)
    server = start_orthanc()
    https: HttpsFront | None = None
    out = [f"## QIDO and STOW benchmark, {datetime.date.today()}", ""]
    out += [f"Machine: {machine()}.", ""]
    try:
        if not args.no_https:
            https = start_https(server)
        large = SeriesSpec(study=9101, series=1, instances=200, rows=128, columns=128)
        small = SeriesSpec(study=9101, series=2, instances=20, rows=64, columns=64)
        upload(server, [large, small])
        out.append(qido(server.dicomweb_url, large, small, 3 if args.quick else 8, https))
        print(out[-1], flush=True)
        count = 50 if args.quick else 200
        specs = [SeriesSpec(study=9102, series=1, instances=count, rows=512, columns=512)]
        out.append(stow(server.dicomweb_url, server, specs, 2 if args.quick else 3))
        print(out[-1], flush=True)
    finally:
        if https is not None:
            https.stop()
        server.stop()
        shutil.rmtree(SCRATCH, ignore_errors=True)
    results = Path(__file__).with_name("results")
    results.mkdir(exist_ok=True)
    (results / "qido_stow.md").write_text("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
