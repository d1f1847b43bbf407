"""Storing many instances: what to send (paths, bytes, datasets), in which STOW-RS requests.

Request bodies are streamed from files chunk by chunk; a batch is never held in
memory. Batches go out a few at a time, since servers such as Orthanc ingest
concurrent requests in parallel.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeAlias, cast

import anyio

from aiodicomweb._exceptions import DicomWebUsageError
from aiodicomweb._part10 import FileKind, classify, dataset_bytes, header_uids, is_dataset
from aiodicomweb._session import Session
from aiodicomweb._stow import store_instances, stow_url
from aiodicomweb._stow_response import FailedInstance, SkippedFile, StoreResult
from aiodicomweb._tasks import task_group
from aiodicomweb._validate import positive_integer

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = [
    "DicomFiles",
    "StoreItem",
    "StoreProgress",
    "StoreProgressCallback",
    "StoreSource",
    "find_dicom_files",
    "store",
    "store_directory",
]

logger = logging.getLogger("aiodicomweb")

StoreItem: TypeAlias = "str | os.PathLike[str] | bytes | bytearray | memoryview | Dataset"
StoreSource: TypeAlias = "StoreItem | Iterable[StoreItem] | AsyncIterable[StoreItem]"
DEFAULT_MAX_REQUEST_SIZE = 100 * 1000 * 1000
DEFAULT_MAX_INSTANCES = 500
DEFAULT_CONCURRENCY = 3
_MIN_BATCH = 4 * 1000 * 1000
_DEFAULT_BATCH = 16 * 1000 * 1000


@dataclass(frozen=True)
class _Upload:
    """One instance to send: a file (streamed) or bytes (already in memory)."""

    source: str
    size: int
    path: Path | None = None
    data: bytes | None = None

    async def chunks(self, chunk_size: int) -> AsyncIterator[bytes]:
        if self.data is not None:
            yield self.data
            return
        assert self.path is not None
        handle = await anyio.open_file(self.path, "rb")
        sent = 0
        async with handle:
            while chunk := await handle.read(chunk_size):
                sent += len(chunk)
                yield chunk
        if sent != self.size:
            raise OSError(f"{self.source} changed size during upload ({self.size} -> {sent})")

    def identity(self) -> tuple[str | None, str | None]:
        """(SOPClassUID, SOPInstanceUID) read from the instance itself, if readable."""
        try:
            return header_uids(self.data if self.data is not None else cast(Path, self.path))
        except (OSError, ValueError):
            return None, None


def _upload(item: object, number: int, checked: bool) -> _Upload:
    """One item as an upload; `checked`: its file was found DICOM already (`_totals`)."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
        return _Upload(f"<bytes #{number}>", len(data), data=data)
    if is_dataset(item):
        data = dataset_bytes(cast("Dataset", item))
        return _Upload(f"<dataset #{number}>", len(data), data=data)
    if isinstance(item, (str, os.PathLike)):
        path = Path(item) if checked else _instance_file(item)
        return _Upload(str(path), path.stat().st_size, path=path)
    raise DicomWebUsageError(
        f"cannot store a {type(item).__name__}: give paths, bytes or pydicom Datasets"
    )


async def _uploads(items: StoreSource, checked: bool) -> AsyncIterator[_Upload]:
    """Every instance in `items`, which may be one item or a (async) iterable of them;
    `checked`: the files of a list were found DICOM already (`_totals`)."""
    if isinstance(items, (str, os.PathLike, bytes, bytearray, memoryview)) or is_dataset(items):
        yield _upload(items, 0, checked=False)
        return
    if isinstance(items, AsyncIterable):
        number = 0
        async for item in cast("AsyncIterable[StoreItem]", items):
            yield _upload(item, number, checked=False)
            number += 1
        return
    for number, item in enumerate(items):
        yield _upload(item, number, checked)


async def _batches(
    items: StoreSource, max_request_size: int, max_instances: int, checked: bool
) -> AsyncIterator[list[_Upload]]:
    batch: list[_Upload] = []
    size = 0
    async for upload in _uploads(items, checked):
        if batch and (size + upload.size > max_request_size or len(batch) >= max_instances):
            yield batch
            batch, size = [], 0
        batch.append(upload)
        size += upload.size
    if batch:
        yield batch


async def _send_batch(session: Session, url: str, batch: list[_Upload]) -> StoreResult:
    result = await store_instances(session, url, batch)
    return await anyio.to_thread.run_sync(_reconcile, result, batch)


def _reconcile(result: StoreResult, batch: list[_Upload]) -> StoreResult:
    """Name what the server left unnamed: each sent instance it neither stored nor listed.

    Only runs when something failed, since it reads every instance's header.
    """
    if result.ok and len(result.stored) >= len(batch):
        return result
    identities = [(upload, *upload.identity()) for upload in batch]
    sources = {uid: upload.source for upload, _, uid in identities if uid}
    named = [f for f in result.failed if f.sop_instance_uid is not None]
    unnamed = len(result.failed) - len(named)
    accounted = {s.sop_instance_uid for s in result.stored} | {f.sop_instance_uid for f in named}
    missing = [
        FailedInstance(sop_class, uid, None, source=upload.source)
        for upload, sop_class, uid in identities
        if uid is None or uid not in accounted
    ]
    failed = [replace(f, source=sources.get(f.sop_instance_uid or "")) for f in named]
    failed += missing
    if unnamed and not missing:
        failed.append(FailedInstance(None, None, None))  # the server's word, unidentified
    return replace(result, failed=tuple(failed))


@dataclass(frozen=True)
class StoreProgress:
    """A snapshot passed to the progress callback after each STOW request.

    Attributes:
        instances: Instances sent and answered so far.
        bytes: Their size.
        failed: How many of them the server did not store.
        total_instances: Instances to send, when known (a list or tuple was given).
        total_bytes: Their size, when known (paths and bytes only).
    """

    instances: int
    bytes: int
    failed: int
    total_instances: int | None
    total_bytes: int | None


StoreProgressCallback = Callable[[StoreProgress], None]


def _instance_file(item: str | os.PathLike[str]) -> Path:
    """A file named to be stored, refused before any request unless it is DICOM.

    Raises:
        DicomWebUsageError: no DICM preamble, or a DICOMDIR.
        FileNotFoundError, OSError: it cannot be read.
    """
    path = Path(item)
    kind, reason = classify(path)
    if kind in (FileKind.NOT_DICOM, FileKind.DICOMDIR):
        raise DicomWebUsageError(f"{path}: {reason}, not an instance to store")
    return path


def _totals(items: StoreSource) -> tuple[int | None, int | None]:
    """Instances and bytes to send, known up front only for lists and tuples (whose
    files are checked here, before any request)."""
    if not isinstance(items, (list, tuple)):
        return None, None
    for item in items:
        if isinstance(item, (str, os.PathLike)):
            _instance_file(item)
    size = 0
    for item in items:
        if isinstance(item, (bytes, bytearray, memoryview)):
            size += len(item)
        elif isinstance(item, (str, os.PathLike)):
            size += os.stat(item).st_size
        else:
            return len(items), None
    return len(items), size


def _batch_target(total_bytes: int | None, max_request_size: int, concurrency: int) -> int:
    """Bytes per request: small enough that `concurrency` requests run side by side.

    Servers such as Orthanc ingest concurrent requests in parallel, so one huge
    request would waste the concurrency. A known total is split into about two
    requests per worker; an unknown one goes in requests of `_DEFAULT_BATCH`.
    """
    wanted = _DEFAULT_BATCH if total_bytes is None else total_bytes // (2 * concurrency)
    return min(max_request_size, max(_MIN_BATCH, wanted))


async def store(
    session: Session,
    items: StoreSource,
    *,
    study_uid: str | None = None,
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
    max_instances_per_request: int = DEFAULT_MAX_INSTANCES,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: StoreProgressCallback | None = None,
    query: str = "",
) -> StoreResult:
    """See `AsyncDicomWebClient.store`."""
    positive_integer("max_request_size", max_request_size)
    positive_integer("max_instances_per_request", max_instances_per_request)
    positive_integer("concurrency", concurrency)
    url = stow_url(session, study_uid, query)
    total_instances, total_bytes = await anyio.to_thread.run_sync(_totals, items)
    target = _batch_target(total_bytes, max_request_size, concurrency)
    results: list[StoreResult] = []
    done = [0, 0, 0]  # instances, bytes, failed
    limiter = anyio.Semaphore(concurrency)

    async def send(index: int, batch: list[_Upload]) -> None:
        try:
            results[index] = result = await _send_batch(session, url, batch)
        finally:
            limiter.release()
        done[0] += len(batch)
        done[1] += sum(upload.size for upload in batch)
        done[2] += len(result.failed)
        if progress is not None:
            progress(StoreProgress(done[0], done[1], done[2], total_instances, total_bytes))

    async with task_group() as group:
        # `_totals` has read the preambles of a list's files (and only then counts them).
        checked = total_instances is not None
        async for batch in _batches(items, target, max_instances_per_request, checked):
            await limiter.acquire()  # bounds batches in flight, and batches prepared
            results.append(StoreResult.empty())
            group.start_soon(send, len(results) - 1, batch)
    merged = StoreResult.empty()
    for result in results:
        merged = merged.merge(result)
    return merged


class DicomFiles(NamedTuple):
    """What `find_dicom_files` found: files to send, unreadable ones, skipped ones."""

    files: list[Path]
    unreadable: list[FailedInstance]
    skipped: list[SkippedFile]


def find_dicom_files(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    include_regex: str | None = None,
) -> DicomFiles:
    """The DICOM files `paths` name, folders searched recursively; the unreadable and
    the skipped ones.

    In a folder, files are sorted, `include_regex` is applied with `re.search` to
    each path relative to the folder, with `/` separators, and files without the
    `DICM` preamble and DICOMDIR files are skipped (logged, and listed). A file
    named directly must be DICOM. A file found twice is listed once.

    Raises:
        FileNotFoundError: a path does not exist.
        DicomWebUsageError: a file named directly is not DICOM, or `include_regex`
            is not a valid regular expression.
    """
    try:
        pattern = re.compile(include_regex) if include_regex is not None else None
    except re.error as error:
        raise DicomWebUsageError(f"invalid include_regex {include_regex!r}: {error}") from None
    named = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    found = DicomFiles([], [], [])
    seen: set[Path] = set()
    for each in map(Path, named):
        if each.is_dir():
            _search_folder(each, pattern, found, seen)
        elif each.exists():
            _take_named(each, found, seen)
        else:
            raise FileNotFoundError(2, "no such file or folder", str(each))
    return found


def _take_named(path: Path, found: DicomFiles, seen: set[Path]) -> None:
    kind, reason = classify(path)
    if kind in (FileKind.NOT_DICOM, FileKind.DICOMDIR):
        raise DicomWebUsageError(f"{path}: {reason}, not an instance to store")
    if kind is FileKind.UNREADABLE:
        found.unreadable.append(FailedInstance(None, None, None, source=str(path)))
    elif path not in seen:
        seen.add(path)
        found.files.append(path)


def _search_folder(
    root: Path, pattern: re.Pattern[str] | None, found: DicomFiles, seen: set[Path]
) -> None:
    for directory, subdirs, names in os.walk(root):
        subdirs.sort()
        for name in sorted(names):
            path = Path(directory, name)
            relative = path.relative_to(root).as_posix()
            if pattern is not None and not pattern.search(relative):
                continue
            kind, reason = classify(path)
            if kind is FileKind.DICOM:
                if path not in seen:
                    seen.add(path)
                    found.files.append(path)
            elif kind is FileKind.UNREADABLE:
                logger.warning("cannot read %s: %s", relative, reason)
                found.unreadable.append(FailedInstance(None, None, None, source=str(path)))
            else:
                logger.info("skipping %s: %s", relative, reason)
                found.skipped.append(SkippedFile(str(path), kind.value))


async def store_directory(
    session: Session,
    folder: str | os.PathLike[str],
    include_regex: str | None,
    *,
    study_uid: str | None,
    max_request_size: int,
    max_instances_per_request: int,
    concurrency: int,
    progress: StoreProgressCallback | None,
    query: str = "",
) -> StoreResult:
    """See `AsyncDicomWebClient.store_directory`."""
    found = await anyio.to_thread.run_sync(_folder_files, folder, include_regex)
    result = StoreResult(stored=(), failed=tuple(found.unreadable), skipped=tuple(found.skipped))
    if found.files:
        stored = await store(
            session, found.files, study_uid=study_uid, max_request_size=max_request_size,
            max_instances_per_request=max_instances_per_request, concurrency=concurrency,
            progress=progress, query=query,
        )  # fmt: skip
        result = result.merge(stored)
    return result


def _folder_files(folder: str | os.PathLike[str], include_regex: str | None) -> DicomFiles:
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(2, "source folder does not exist", str(root))
    if not root.is_dir():
        raise NotADirectoryError(20, "source is not a folder", str(root))
    return find_dicom_files(root, include_regex)
