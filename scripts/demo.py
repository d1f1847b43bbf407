"""The README's first command (`nox -s demo`): an end-to-end run against a local Orthanc.

Not built yet: the client is still under construction. For now the demo starts a
throw-away Orthanc with its DICOMweb plugin, uploads a generated study through
Orthanc's REST API, counts it over QIDO-RS with the standard library, and stops
the server. The full demo (store, search, concurrent download with progress,
byte verification, delete) arrives with the client.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.corpus import upload_instances
from tests.support.dicomgen import SeriesSpec, generate_series
from tests.support.orthanc import OrthancServer


def main() -> int:
    started = time.perf_counter()
    with OrthancServer() as server:
        print(f"Orthanc with DICOMweb running at {server.dicomweb_url}")
        specs = [SeriesSpec(study=900, series=n, instances=20) for n in (1, 2, 3)]
        instances = [i for spec in specs for i in generate_series(spec)]
        upload_instances(server, instances)
        url = f"{server.dicomweb_url}/studies/{specs[0].study_uid}/series"
        with urllib.request.urlopen(url, timeout=30) as response:
            series = json.loads(response.read())
        size = sum(len(i.data) for i in instances) / 1e6
        print(
            f"Uploaded {len(instances)} instances ({size:.1f} MB); QIDO lists {len(series)} series"
        )
    print(
        "NOTE: the aiodicomweb client is not built yet; this demo only exercises the test server."
    )
    print(
        f"Done in {time.perf_counter() - started:.1f} s; Orthanc stopped and its storage removed."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
