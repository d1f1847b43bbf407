"""One series of a batch: into its folder, then recorded; and what came of it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import anyio

from aiodicomweb import AsyncDicomWebClient, DownloadProgress, DownloadResult
from aiodicomweb.batch._layout import Record, clear_series, series_folder, write_record

__all__ = [
    "REPORT_FIELDS",
    "DownloadOptions",
    "ItemResult",
    "SeriesItem",
    "Status",
    "describe_error",
    "download_item",
    "failed",
    "finished",
]

Status = Literal["downloaded", "skipped", "failed"]
REPORT_FIELDS = (
    "line",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "status",
    "instances",
    "bytes",
    "seconds",
    "error_type",
    "error",
)
_MAX_MESSAGE = 500
# Instances and bytes written so far by one item.
ItemProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class SeriesItem:
    """One series to download, from manifest line `line` (a series row or a study's)."""

    line: int
    study_uid: str
    series_uid: str


@dataclass(frozen=True)
class DownloadOptions:
    """How each series is fetched (see `AsyncDicomWebClient.download_series`)."""

    strategy: Literal["multipart", "per_instance"] = "multipart"
    fallback: bool = False


@dataclass(frozen=True)
class ItemResult:
    """One row of the report.

    Attributes:
        line: The manifest line the item came from.
        study_uid: The study.
        series_uid: The series; None for a study row whose series could not be listed,
            or an invalid row.
        status: `downloaded`, `skipped` (complete before this run) or `failed`.
        instances: Instances in the series folder (0 when failed).
        bytes: Their size.
        seconds: Wall time of the download (0 when skipped).
        error_type: The error's class name, when failed.
        error: One line saying what went wrong, without credentials.
    """

    line: int
    study_uid: str
    series_uid: str | None
    status: Status
    instances: int = 0
    bytes: int = 0
    seconds: float = 0.0
    error_type: str | None = None
    error: str | None = None

    def row(self) -> dict[str, object]:
        """The report's fields, named as `REPORT_FIELDS`."""
        values = (self.line, self.study_uid, self.series_uid, self.status, self.instances,
                  self.bytes, round(self.seconds, 3), self.error_type, self.error)  # fmt: skip
        return dict(zip(REPORT_FIELDS, values, strict=True))


def finished(item: SeriesItem, record: Record, status: Status, seconds: float = 0.0) -> ItemResult:
    """The result of an item whose series is complete, as its record says."""
    return ItemResult(item.line, item.study_uid, item.series_uid, status, record.instances,
                      record.bytes, seconds)  # fmt: skip


def failed(
    line: int, study_uid: str, series_uid: str | None, error: BaseException, seconds: float = 0.0
) -> ItemResult:
    """The result of an item that failed with `error`."""
    error_type, message = describe_error(error)
    return ItemResult(line, study_uid, series_uid, "failed", seconds=seconds,
                      error_type=error_type, error=message)  # fmt: skip


def describe_error(error: BaseException) -> tuple[str, str]:
    """The error's class name and one line about it (the library's messages hold no secret)."""
    if isinstance(error, OSError) and error.strerror and not str(error).startswith(error.strerror):
        text = f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    else:
        text = str(error) or type(error).__name__
    text = " ".join(text.split())
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 3] + "..."
    return type(error).__name__, text


async def download_item(
    client: AsyncDicomWebClient,
    root: Path,
    item: SeriesItem,
    options: DownloadOptions,
    progress: ItemProgress | None = None,
) -> ItemResult:
    """Download one series into `root/<study>/<series>/` and record it; never raises an
    `Exception`, it becomes a failed result. Leftovers of earlier attempts go first."""
    started = time.perf_counter()
    try:
        await anyio.to_thread.run_sync(_make_room, root, item)
        result = await client.download_series(
            item.study_uid,
            item.series_uid,
            series_folder(root, item.study_uid, item.series_uid),
            strategy=options.strategy,
            fallback=options.fallback,
            concurrency=1,  # one request at a time per item: the batch's limit counts requests
            progress=None if progress is None else _relay(progress),
            create_parent=False,
        )
        record = await anyio.to_thread.run_sync(partial(_record, root, item, result))
    except Exception as error:
        return failed(item.line, item.study_uid, item.series_uid, error,
                      time.perf_counter() - started)  # fmt: skip
    return finished(item, record, "downloaded", time.perf_counter() - started)


def _make_room(root: Path, item: SeriesItem) -> None:
    clear_series(root, item.study_uid, item.series_uid)
    (root / item.study_uid).mkdir(exist_ok=True)


def _record(root: Path, item: SeriesItem, result: DownloadResult) -> Record:
    files = {path.name: path.stat().st_size for series in result.series for path in series.files}
    write_record(root, item.study_uid, item.series_uid, files)
    return Record(files)


def _relay(progress: ItemProgress) -> Callable[[DownloadProgress], None]:
    def relay(event: DownloadProgress) -> None:
        progress(event.total_instances, event.total_bytes)

    return relay
