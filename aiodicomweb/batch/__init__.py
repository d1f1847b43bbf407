"""Batch downloads of a manifest's studies and series, in-process or on Dask.

    from aiodicomweb.batch import download_manifest

    result = download_manifest("cohort.csv", "out", url="https://pacs/dicom-web",
                               auth=("user", "password"), report="report.csv")
    result = download_manifest("cohort.csv", "out", url=url, workers=4)  # a LocalCluster
    result = download_manifest("cohort.csv", "out", url=url, scheduler="tcp://host:8786")

Series land in `out/<StudyInstanceUID>/<SeriesInstanceUID>/`, each complete or not at
all; a completion record per series lets a rerun skip what is done. Dask
(`pip install "aiodicomweb[dask]"`) is imported only when a scheduler or workers
are asked for.
"""

from __future__ import annotations

from aiodicomweb.batch._items import ItemResult, SeriesItem
from aiodicomweb.batch._layout import RECORDS
from aiodicomweb.batch._manifest import (
    InvalidRow,
    Manifest,
    ManifestError,
    ManifestRow,
    parse_manifest,
    read_manifest,
)
from aiodicomweb.batch._report import BatchProgress, BatchResult
from aiodicomweb.batch._run import DEFAULT_MAX_REQUESTS, download_manifest, download_manifest_async

__all__ = [
    "DEFAULT_MAX_REQUESTS",
    "RECORDS",
    "BatchProgress",
    "BatchResult",
    "InvalidRow",
    "ItemResult",
    "Manifest",
    "ManifestError",
    "ManifestRow",
    "SeriesItem",
    "download_manifest",
    "download_manifest_async",
    "parse_manifest",
    "read_manifest",
]
