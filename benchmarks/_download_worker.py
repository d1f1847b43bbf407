"""One download, in its own process: `python _download_worker.py CASE URL STUDY SERIES OUT`.

Prints `{"seconds": <in-process transfer time>}` on its last line.
"""

from __future__ import annotations

import json
import os
import sys
import time


def aiodicomweb_case(case: str, url: str, study: str, series: str, out: str) -> float:
    import anyio

    from aiodicomweb import AsyncDicomWebClient

    async def run() -> float:
        async with AsyncDicomWebClient(url) as client:
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
            return time.perf_counter() - started

    return anyio.run(run)


def dicomweb_client_case(case: str, url: str, study: str, series: str, out: str) -> float:
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url)
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
    return time.perf_counter() - started


def main(case: str, url: str, study: str, series: str, out: str) -> None:
    runner = aiodicomweb_case if case.startswith("aio") else dicomweb_client_case
    seconds = runner(case, url, study, series, out)
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's VmHWM (peak RSS since exec) in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


if __name__ == "__main__":
    main(*sys.argv[1:6])
