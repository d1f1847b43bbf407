"""One download, in its own process: `python _download_worker.py CASE URL STUDY SERIES OUT`.

Prints `{"seconds": <in-process transfer time>, "cpu_seconds": <its user + sys>, ...}`
on its last line. https URLs need nothing more: the benchmark puts its CA in
`SSL_CERT_FILE` (read by aiodicomweb, whose `trust_env` is on by default) and
`REQUESTS_CA_BUNDLE` (read by dicomweb-client's requests session).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time


def cpu_seconds() -> float:
    """User + sys time of this process so far, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def aiodicomweb_case(
    case: str, url: str, study: str, series: str, out: str
) -> tuple[float, float]:
    import anyio

    from aiodicomweb import AsyncDicomWebClient

    async def run() -> tuple[float, float]:
        async with AsyncDicomWebClient(url) as client:
            cpu = cpu_seconds()
            started = time.perf_counter()
            if case == "aio-multipart":
                await client.download_series(study, series, os.path.join(out, "s"))
            elif case == "aio-per-instance":
                await client.download_series(
                    study, series, os.path.join(out, "s"), strategy="per_instance", concurrency=4
                )
            elif case == "aio-study":
                await client.download_study(study, os.path.join(out, "s"))
            elif case == "aio-study-per-instance":
                await client.download_study(study, os.path.join(out, "s"), strategy="per_instance")
            else:
                raise SystemExit(f"unknown case {case}")
            return time.perf_counter() - started, cpu_seconds() - cpu

    return anyio.run(run)


def dicomweb_client_case(
    case: str, url: str, study: str, series: str, out: str
) -> tuple[float, float]:
    if case.startswith("compat-"):  # the drop-in, driven exactly as the peer is
        from aiodicomweb.compat import DICOMwebClient
    else:
        from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url)
    case = case.removeprefix("compat-")
    cpu = cpu_seconds()
    started = time.perf_counter()
    count = 0
    if case == "dwc-retrieve":
        datasets = client.retrieve_series(study, series)
    elif case == "dwc-iter":
        datasets = client.iter_series(study, series)
    elif case == "dwc-retrieve-study":
        datasets = client.retrieve_study(study)
    elif case == "dwc-iter-study":
        datasets = client.iter_study(study)
    else:
        raise SystemExit(f"unknown case {case}")
    for dataset in datasets:
        dataset.save_as(os.path.join(out, f"file{count:06d}.dcm"))
        count += 1
    return time.perf_counter() - started, cpu_seconds() - cpu


def main(case: str, url: str, study: str, series: str, out: str) -> None:
    runner = aiodicomweb_case if case.startswith("aio-") else dicomweb_client_case
    seconds, cpu = runner(case, url, study, series, out)
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's VmHWM (peak RSS since exec) in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


if __name__ == "__main__":
    main(*sys.argv[1:6])
