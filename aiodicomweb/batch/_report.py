"""What a batch tells: a report row per item, progress as items finish, the result."""

from __future__ import annotations

import base64
import csv
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from aiodicomweb import BearerTokenAuth, DicomWebUsageError
from aiodicomweb.batch._items import REPORT_FIELDS, ItemProgress, ItemResult, SeriesItem

__all__ = [
    "BatchProgress",
    "BatchResult",
    "ProgressCallback",
    "ReportWriter",
    "Tracker",
    "secrets_of",
]

_SENSITIVE_HEADERS = ("authorization", "cookie", "key", "token", "secret", "password")


@dataclass(frozen=True)
class BatchProgress:
    """Where a batch stands, passed to the progress callback.

    Attributes:
        items: Report rows the batch will have (series, plus failed rows and studies).
        done: Rows finished so far, whatever their status.
        downloaded: Series downloaded so far in this run.
        skipped: Series complete before this run (known before any download).
        failed: Rows failed so far.
        instances: Instances downloaded so far in this run, in-flight ones included.
        bytes: Their bytes.
        elapsed: Seconds since the batch started.
        last: The row that just finished; None when an instance arrived.
    """

    items: int
    done: int
    downloaded: int
    skipped: int
    failed: int
    instances: int
    bytes: int
    elapsed: float
    last: ItemResult | None = None

    @property
    def fraction(self) -> float:
        """Share of the work done: rows finished, those skipped left out."""
        todo = self.items - self.skipped
        return 1.0 if todo <= 0 else (self.done - self.skipped) / todo

    @property
    def rate(self) -> float:
        """Bytes per second so far."""
        return self.bytes / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the pace so far; None before the first row finishes."""
        fraction = self.fraction
        if fraction <= 0 or self.elapsed <= 0:
            return None
        return self.elapsed * (1 - fraction) / fraction


ProgressCallback = Callable[[BatchProgress], None]


@dataclass(frozen=True)
class BatchResult:
    """What a batch did: one `ItemResult` per report row, in manifest order.

    Attributes:
        root: The batch's folder.
        items: The rows.
        seconds: Wall time of the batch.
    """

    root: Path
    items: tuple[ItemResult, ...]
    seconds: float

    def with_status(self, status: str) -> list[ItemResult]:
        return [item for item in self.items if item.status == status]

    @property
    def downloaded(self) -> int:
        return len(self.with_status("downloaded"))

    @property
    def skipped(self) -> int:
        return len(self.with_status("skipped"))

    @property
    def failed(self) -> int:
        return len(self.with_status("failed"))

    @property
    def ok(self) -> bool:
        """Nothing failed."""
        return not self.failed

    @property
    def instances(self) -> int:
        """Instances downloaded by this run."""
        return sum(item.instances for item in self.with_status("downloaded"))

    @property
    def bytes(self) -> int:
        """Bytes downloaded by this run."""
        return sum(item.bytes for item in self.with_status("downloaded"))

    def summary(self) -> str:
        """E.g. "40 items: 38 downloaded, 2 skipped, 0 failed"."""
        count = f"{len(self.items)} item" + ("" if len(self.items) == 1 else "s")
        done = f"{self.downloaded} downloaded, {self.skipped} skipped, {self.failed} failed"
        return f"{count}: {done}"


class ReportWriter:
    """The report file, one row per item as it finishes: CSV (`.csv`) or JSON lines
    (`.jsonl`, `.ndjson`, `.json`). Missing parent folders are made.

    Raises:
        DicomWebUsageError: another suffix.
        OSError: the file cannot be created.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in (".csv", ".jsonl", ".ndjson", ".json"):
            raise DicomWebUsageError(
                f"report {self.path.name}: name it .csv (CSV) or .jsonl (JSON lines)"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._stream: IO[str] = self.path.open("w", encoding="utf-8", newline="")
        self._csv = csv.DictWriter(self._stream, REPORT_FIELDS) if suffix == ".csv" else None
        if self._csv is not None:
            self._csv.writeheader()

    def write(self, result: ItemResult) -> None:
        row = result.row()
        if self._csv is not None:
            self._csv.writerow({k: "" if v is None else v for k, v in row.items()})
        else:
            self._stream.write(json.dumps(row) + "\n")
        self._stream.flush()

    def close(self) -> None:
        self._stream.close()


class Tracker:
    """Collects the rows as they finish: report, progress callback, final result.

    Error messages lose any of `secrets` before they go anywhere; times run from
    `started` (a `time.perf_counter()` value; by default, now).
    """

    def __init__(
        self,
        items: int,
        progress: ProgressCallback | None,
        report: ReportWriter | None,
        secrets: Iterable[str] = (),
        started: float | None = None,
    ) -> None:
        self.items = items
        self._progress = progress
        self._report = report
        self._secrets = tuple(s for s in secrets if s)
        self._started = time.perf_counter() if started is None else started
        self._results: list[ItemResult] = []
        self._counts = {"downloaded": 0, "skipped": 0, "failed": 0}
        self._instances = self._bytes = 0
        self._in_flight: dict[SeriesItem, tuple[int, int]] = {}

    def add(self, result: ItemResult) -> None:
        """One row finished."""
        if result.error and self._secrets:
            result = replace(result, error=_scrub(result.error, self._secrets))
        self._results.append(result)
        self._counts[result.status] += 1
        if result.status == "downloaded":
            self._instances += result.instances
            self._bytes += result.bytes
        if self._report is not None:
            self._report.write(result)
        self._notify(result)

    def finish(self, item: SeriesItem, result: ItemResult) -> None:
        """An item that reported progress finished."""
        self._in_flight.pop(item, None)
        self.add(result)

    def item_progress(self, item: SeriesItem) -> ItemProgress:
        """A callback for an item's instances and bytes so far."""

        def update(instances: int, size: int) -> None:
            self._in_flight[item] = (instances, size)
            self._notify(None)

        return update

    def _notify(self, last: ItemResult | None) -> None:
        if self._progress is None:
            return
        flying = self._in_flight.values()
        self._progress(
            BatchProgress(
                self.items,
                len(self._results),
                self._counts["downloaded"],
                self._counts["skipped"],
                self._counts["failed"],
                self._instances + sum(n for n, _ in flying),
                self._bytes + sum(size for _, size in flying),
                time.perf_counter() - self._started,
                last,
            )
        )

    def result(self, root: Path) -> BatchResult:
        """The batch's result, rows in manifest order."""
        rows = sorted(self._results, key=lambda r: (r.line, r.series_uid or ""))
        return BatchResult(root, tuple(rows), time.perf_counter() - self._started)


def secrets_of(url: str, options: Mapping[str, Any]) -> list[str]:
    """Credential values among a client's URL and options, to keep out of the report."""
    found = [urlsplit(url).password or ""]
    auth = options.get("auth")
    if isinstance(auth, tuple) and len(auth) == 2:
        found.append(str(auth[1]))
        found.append(base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    elif isinstance(auth, BearerTokenAuth):
        found.append((auth.authorization() or "").removeprefix("Bearer "))
    headers, cookies = options.get("headers"), options.get("cookies")
    for name, value in headers.items() if isinstance(headers, Mapping) else ():
        if any(word in str(name).lower() for word in _SENSITIVE_HEADERS):
            found.append(str(value))
    found += [str(value) for value in (cookies.values() if isinstance(cookies, Mapping) else ())]
    return [secret for secret in found if secret]


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
