"""Series and studies to folders: strategies, bounded concurrency, atomic results.

A result is assembled in a hidden sibling folder of `dest_dir` and renamed into
place only once every instance has arrived whole (the multipart closing
delimiter seen, every file closed). On any failure, cancellation included, the
sibling is removed and `dest_dir` never appears.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import secrets
import shutil
import threading
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from contextlib import aclosing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from aiodicomweb._bulk_files import write_part
from aiodicomweb._exceptions import (
    DicomWebHTTPError,
    DicomWebServerError,
    DicomWebTransportError,
    DicomWebUsageError,
    MultipartError,
    MultipartUnsupportedError,
    UnexpectedResponseError,
)
from aiodicomweb._part10 import header_uids
from aiodicomweb._retry import retrying
from aiodicomweb._session import Session
from aiodicomweb._tasks import task_group
from aiodicomweb._urls import resource_path
from aiodicomweb._validate import positive_integer, server_uid, validate_uid

__all__ = [
    "DownloadProgress",
    "DownloadResult",
    "SeriesResult",
    "Strategy",
    "download_series",
    "download_study",
]

logger = logging.getLogger("aiodicomweb")
Strategy = Literal["multipart", "per_instance"]
STRATEGIES = ("multipart", "per_instance")
# Statuses with which servers refuse a multipart series retrieve.
_MULTIPART_REFUSALS = (400, 406, 415, 501)


@dataclass(frozen=True)
class DownloadProgress:
    """A snapshot passed to the progress callback after each instance.

    Attributes:
        series_uid: The series the instance belonged to.
        series_instances: Instances of that series written so far.
        series_bytes: Bytes of that series written so far.
        series_expected: Instances the series holds, when known (per instance).
        total_instances: Instances written so far in the whole call.
        total_bytes: Bytes written so far in the whole call.
        series_done: The series is complete.
    """

    series_uid: str
    series_instances: int
    series_bytes: int
    series_expected: int | None
    total_instances: int
    total_bytes: int
    series_done: bool = False


ProgressCallback = Callable[[DownloadProgress], None]


@dataclass(frozen=True)
class SeriesResult:
    """One downloaded series: where it is and what it holds."""

    series_uid: str
    path: Path
    files: tuple[Path, ...]
    bytes: int

    @property
    def instances(self) -> int:
        return len(self.files)


@dataclass(frozen=True)
class DownloadResult:
    """What a download call wrote.

    Attributes:
        path: The destination folder (now complete).
        study_uid: The study.
        series: One entry per series.
        seconds: Wall time of the call.
    """

    path: Path
    study_uid: str
    series: tuple[SeriesResult, ...]
    seconds: float

    @property
    def instances(self) -> int:
        return sum(s.instances for s in self.series)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.series)


@dataclass
class _Tally:
    """Progress counters shared by every series of one call."""

    callback: ProgressCallback | None
    instances: int = 0
    bytes: int = 0
    per_series: dict[str, list[int]] = field(default_factory=dict)

    def add(self, series_uid: str, size: int, expected: int | None) -> None:
        """One more instance of `size` bytes written."""
        counts = self.per_series.setdefault(series_uid, [0, 0])
        counts[0] += 1
        counts[1] += size
        self.instances += 1
        self.bytes += size
        self._report(series_uid, expected, done=False)

    def series_done(self, series_uid: str, instances: int) -> None:
        self.per_series.setdefault(series_uid, [0, 0])
        self._report(series_uid, instances, done=True)

    def _report(self, series_uid: str, expected: int | None, done: bool) -> None:
        if self.callback is not None:
            instances, size = self.per_series[series_uid]
            self.callback(
                DownloadProgress(series_uid, instances, size, expected,
                                 self.instances, self.bytes, done)
            )  # fmt: skip


def check_destination(dest_dir: str | os.PathLike[str], *, create_parent: bool = True) -> Path:
    """Refuse a destination that exists or that cannot be made; nothing is created.

    Args:
        create_parent: Missing parents will be made (`mkdir -p`); False refuses them.

    Raises:
        FileExistsError: `dest_dir` exists.
        FileNotFoundError: its parent is missing and `create_parent` is False.
        NotADirectoryError: its parent, or an existing ancestor, is not a folder.
        PermissionError: the folder in which the first missing one would be made
            is not writable.
        OSError: a name is longer than the file system takes (ENAMETOOLONG).
    """
    dest = Path(dest_dir).absolute()
    if os.path.lexists(dest):
        raise FileExistsError(17, "destination already exists", str(dest))
    missing = [dest]
    while not os.path.lexists(missing[-1].parent):
        if not create_parent:
            raise FileNotFoundError(2, "parent folder does not exist", str(dest.parent))
        missing.append(missing[-1].parent)
    existing = missing[-1].parent
    if not existing.is_dir():
        raise NotADirectoryError(20, "not a folder", str(existing))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(13, "folder is not writable", str(existing))
    longest = _name_max(existing)
    for folder in missing:
        if len(os.fsencode(folder.name)) > longest:
            raise OSError(errno.ENAMETOOLONG, "folder name too long", str(folder))
    return dest


@contextmanager
def parents_created(dest_dir: str | os.PathLike[str], create: bool) -> Iterator[None]:
    """Make the missing parents of `dest_dir` (`mkdir -p`); remove them again on failure.

    Threads may share parents (the legacy adapter's study folder): each is made
    once, race-free, and removed only when it was made for a download, the last
    download using it failed, and it is empty.
    """
    taken: list[Path] = []
    with _PARENTS_LOCK:
        try:
            for folder in _missing_parents(Path(dest_dir).absolute()) if create else []:
                try:
                    os.mkdir(folder)  # top down
                    _PARENTS_CREATED.add(folder)
                except FileExistsError:
                    if not folder.is_dir():
                        raise NotADirectoryError(20, "not a folder", str(folder)) from None
                _PARENTS_IN_USE[folder] += 1
                taken.append(folder)
        except BaseException:
            _release(taken, succeeded=False)
            raise
    succeeded = False
    try:
        yield
        succeeded = True
    finally:
        with _PARENTS_LOCK:
            _release(taken, succeeded)


def _missing_parents(dest: Path) -> list[Path]:
    """Parents to make, top down, with those another download made and still uses (shared)."""
    missing: list[Path] = []
    parent = dest.parent
    while not os.path.lexists(parent) or parent in _PARENTS_IN_USE:
        missing.append(parent)
        parent = parent.parent
    return missing[::-1]


def _release(taken: list[Path], succeeded: bool) -> None:
    """Give `taken` back (under the lock); on failure remove what was made, deepest first."""
    for folder in reversed(taken):
        _PARENTS_IN_USE[folder] -= 1
        if _PARENTS_IN_USE[folder]:
            continue
        del _PARENTS_IN_USE[folder]
        if not succeeded and folder in _PARENTS_CREATED:
            with suppress(OSError):
                os.rmdir(folder)  # empty, or kept: never removes what others put there
        _PARENTS_CREATED.discard(folder)


_PARENTS_LOCK = threading.Lock()
_PARENTS_IN_USE: Counter[Path] = Counter()
_PARENTS_CREATED: set[Path] = set()


@contextmanager
def atomic_directory(dest: Path) -> Iterator[Path]:
    """Yield a hidden sibling of `dest`; rename it to `dest` on success, remove it on failure."""
    # The sibling's name fits whatever the length of dest's (a prefix of it, for people).
    staging = dest.parent / f".{dest.name[:64]}.{secrets.token_hex(4)}.partial"
    os.mkdir(staging)
    try:
        yield staging
        if os.path.lexists(dest):
            raise FileExistsError(17, "destination appeared during the download", str(dest))
        os.rename(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _study_destination(
    dest_dir: str | os.PathLike[str], create_parent: bool, merge: bool
) -> tuple[Path, bool]:
    """Where a study goes, and whether its series join an existing folder (`merge`)."""
    if merge and os.path.isdir(dest_dir):
        if not os.access(dest_dir, os.W_OK | os.X_OK):
            raise PermissionError(13, "folder is not writable", str(dest_dir))
        return Path(dest_dir).absolute(), True
    return check_destination(dest_dir, create_parent=create_parent), False


@contextmanager
def merged_directories(dest: Path, names: Sequence[str]) -> Iterator[Path]:
    """Yield a hidden folder in `dest`; move its `names` into `dest` on success, remove it
    on failure."""
    staging = dest / f".merge.{secrets.token_hex(4)}.partial"
    os.mkdir(staging)
    try:
        yield staging
        _check_free(dest, names)
        for name in names:
            os.rename(staging / name, dest / name)
        os.rmdir(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _check_free(dest: Path, names: Sequence[str]) -> None:
    for name in names:
        if os.path.lexists(dest / name):
            raise FileExistsError(17, "series folder already exists", str(dest / name))


def _name_max(folder: Path) -> int:
    """The longest file name `folder`'s file system takes, in bytes."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows), or no answer
        return 255


def _file_name(index: int) -> str:
    return f"file{index:06d}.dcm"


class _StreamBroken(Exception):  # noqa: N818 - internal signal, never escapes
    """A multipart stream broke after some instances arrived whole: resume, don't restart."""

    def __init__(self, error: DicomWebServerError, files: list[Path]) -> None:
        super().__init__(str(error))
        self.error = error
        self.files = files


@dataclass
class _SeriesJob:
    """One series into one folder, by either strategy; retries per whole unit."""

    session: Session
    study_uid: str
    series_uid: str
    folder: Path
    tally: _Tally
    transfer_syntax: str | None
    concurrency: int

    async def run(self, strategy: Strategy, fallback: bool) -> SeriesResult:
        if strategy == "multipart":
            try:
                result = await self.multipart()
            except MultipartUnsupportedError:
                if not fallback:
                    raise
                logger.warning("series %s: multipart refused, fetching per instance",
                               self.series_uid)  # fmt: skip
                _empty(self.folder)
                result = await self.per_instance()
        else:
            result = await self.per_instance()
        self.tally.series_done(self.series_uid, result.instances)
        return result

    async def multipart(self) -> SeriesResult:
        """One WADO-RS request; a stream that breaks midway is resumed per instance."""
        try:
            files = await retrying(self.session.retry, self._multipart_attempt)
        except _StreamBroken as broken:
            files = await self.resume(broken)
        except (DicomWebHTTPError, UnexpectedResponseError) as error:
            refusal = _refusal(error)
            if refusal is error:
                raise
            raise refusal from error
        return self._result(files)

    async def _multipart_attempt(self) -> list[Path]:
        _empty(self.folder)
        files: list[Path] = []
        resource = resource_path(self.study_uid, self.series_uid)
        try:
            async with self.session.open_parts(
                resource, self.transfer_syntax, retry=False
            ) as parts:
                async for part in parts:
                    path = self.folder / _file_name(len(files))
                    size = await write_part(part, path)
                    files.append(path)
                    self.tally.add(self.series_uid, size, None)
        except (MultipartError, DicomWebTransportError) as error:
            policy = self.session.retry
            if files and policy is not None and policy.should_retry(error):
                raise _StreamBroken(error, files) from error
            raise
        if not files:
            raise UnexpectedResponseError(
                f"series {self.series_uid}: the server sent no instances"
            )
        return files

    async def resume(self, broken: _StreamBroken) -> list[Path]:
        """Keep the instances that arrived whole; fetch only the missing ones."""
        received = broken.files
        (self.folder / _file_name(len(received))).unlink(missing_ok=True)  # the cut-off part
        arrived = [await anyio.to_thread.run_sync(_sop_instance_uid, path) for path in received]
        listed = await self.session.list_instance_uids(self.study_uid, self.series_uid)
        whole = set(arrived)
        if whole - set(listed) or len(whole) != len(arrived):
            raise UnexpectedResponseError(
                f"series {self.series_uid}: the stream held instances QIDO does not list"
            ) from broken.error
        missing = [uid for uid in listed if uid not in whole]
        kept = sum(path.stat().st_size for path in received)
        logger.warning(
            "series %s: stream broke after %d instances (%s); kept %d bytes, fetching the "
            "%d missing instances one by one", self.series_uid, len(received), broken.error,
            kept, len(missing),
        )  # fmt: skip
        return received + await self.fetch(_listed(missing), start=len(received))

    async def per_instance(self) -> SeriesResult:
        """QIDO lists the instances page by page; each is fetched alone, in QIDO order,
        from the first page on while the listing goes on."""
        pages = self.session.instance_uid_pages(self.study_uid, self.series_uid)
        files = await self.fetch(pages, start=0)
        if not files:
            raise UnexpectedResponseError(f"series {self.series_uid}: QIDO lists no instances")
        return self._result(files)

    async def fetch(self, pages: AsyncGenerator[list[str], None], start: int) -> list[Path]:
        """Fetch the UIDs of `pages` into consecutive files from `start`, `concurrency`
        at a time, as the pages come."""
        slots = anyio.Semaphore(self.concurrency)
        paths: list[Path] = []
        expected: int | None = None  # the series' size, once the listing has ended

        async def one(sop_uid: str, path: Path) -> None:
            try:
                size = await retrying(self.session.retry, lambda: self._instance(sop_uid, path))
            finally:
                slots.release()
            self.tally.add(self.series_uid, size, expected)

        async def listing(send: MemoryObjectSendStream[list[str]]) -> None:
            async with send, aclosing(pages):
                async for page in pages:  # the next page is asked for while this one downloads
                    send.send_nowait(page)

        send, receive = anyio.create_memory_object_stream[list[str]](math.inf)
        async with task_group() as group, receive:
            group.start_soon(listing, send)
            async for page in receive:
                for sop_uid in page:
                    await slots.acquire()
                    path = self.folder / _file_name(start + len(paths))
                    paths.append(path)
                    group.start_soon(one, sop_uid, path)
            expected = start + len(paths)
        return paths

    async def _instance(self, sop_uid: str, path: Path) -> int:
        """One whole instance to `path` (one retryable unit); returns its size."""
        resource = resource_path(self.study_uid, self.series_uid, sop_uid)
        count = size = 0
        async with self.session.open_parts(resource, self.transfer_syntax, retry=False) as parts:
            async for part in parts:
                count += 1
                if count > 1:
                    raise UnexpectedResponseError(f"instance {sop_uid}: more than one part")
                size = await write_part(part, path)
        if count == 0:
            raise UnexpectedResponseError(f"instance {sop_uid}: the server sent no part")
        return size

    def _result(self, files: list[Path]) -> SeriesResult:
        size = sum(path.stat().st_size for path in files)
        return SeriesResult(self.series_uid, self.folder, tuple(files), size)


def _refusal(error: DicomWebHTTPError | UnexpectedResponseError) -> Exception:
    """The error to raise when a multipart series retrieve failed as a whole."""
    refused = (
        error.status in _MULTIPART_REFUSALS
        if isinstance(error, DicomWebHTTPError)
        else isinstance(error, MultipartUnsupportedError)  # another media type came back
    )
    if not refused:
        return error
    return MultipartUnsupportedError(
        f"{error}; this server may not serve a series as multipart: "
        "use strategy='per_instance' (or fallback=True)"
    )


def _sop_instance_uid(path: Path) -> str:
    """The SOP Instance UID in a received file's header, checked as a server's UID."""
    try:
        _, uid = header_uids(path)
    except ValueError as error:  # the server's bytes; an OSError is our own disk
        raise UnexpectedResponseError(
            f"{path.name}: no readable SOPInstanceUID ({error})"
        ) from None
    return server_uid(uid, "SOPInstanceUID")


def _empty(folder: Path) -> None:
    """Remove what a failed attempt left, so a retry starts from a clean folder."""
    for entry in folder.iterdir():
        entry.unlink()


def _check_strategy(strategy: str, **concurrencies: int) -> None:
    if strategy not in STRATEGIES:
        raise DicomWebUsageError(f"unknown strategy {strategy!r}: use one of {STRATEGIES}")
    for name, value in concurrencies.items():
        positive_integer(name, value)


async def download_series(
    session: Session,
    study_uid: str,
    series_uid: str,
    dest_dir: str | os.PathLike[str],
    *,
    strategy: Strategy = "multipart",
    fallback: bool = False,
    concurrency: int = 4,
    transfer_syntax: str | None = "*",
    progress: ProgressCallback | None = None,
    create_parent: bool = True,
) -> DownloadResult:
    """See `AsyncDicomWebClient.download_series`."""
    validate_uid(study_uid, "StudyInstanceUID")
    validate_uid(series_uid, "SeriesInstanceUID")
    _check_strategy(strategy, concurrency=concurrency)
    started = time.perf_counter()
    tally = _Tally(progress)
    dest = check_destination(dest_dir, create_parent=create_parent)
    with parents_created(dest, create_parent):
        with atomic_directory(dest) as staging:
            job = _SeriesJob(session, study_uid, series_uid, staging, tally, transfer_syntax,
                             concurrency)  # fmt: skip
            result = await job.run(strategy, fallback)
    files = tuple(dest / f.name for f in result.files)
    final = SeriesResult(series_uid, dest, files, result.bytes)
    return DownloadResult(dest, study_uid, (final,), time.perf_counter() - started)


async def download_study(
    session: Session,
    study_uid: str,
    dest_dir: str | os.PathLike[str],
    *,
    strategy: Strategy = "multipart",
    fallback: bool = False,
    series_concurrency: int = 3,
    concurrency: int = 4,
    transfer_syntax: str | None = "*",
    progress: ProgressCallback | None = None,
    series_uids: Sequence[str] | None = None,
    create_parent: bool = True,
    merge: bool = False,
) -> DownloadResult:
    """See `AsyncDicomWebClient.download_study`."""
    validate_uid(study_uid, "StudyInstanceUID")
    _check_strategy(strategy, concurrency=concurrency, series_concurrency=series_concurrency)
    started = time.perf_counter()
    dest, merging = _study_destination(dest_dir, create_parent, merge)
    if series_uids is None:
        uids = list(await session.list_series(study_uid))
    else:
        uids = [validate_uid(uid, "SeriesInstanceUID") for uid in series_uids]
        if len(set(uids)) != len(uids):
            raise DicomWebUsageError(f"series_uids names a series twice: {list(series_uids)!r}")
    if not uids:
        raise UnexpectedResponseError(f"study {study_uid}: QIDO lists no series")
    if merging:
        _check_free(dest, uids)
    tally = _Tally(progress)
    results: dict[str, SeriesResult] = {}
    limiter = anyio.CapacityLimiter(series_concurrency)
    staged = merged_directories(dest, uids) if merging else atomic_directory(dest)
    with parents_created(dest, create_parent and not merging), staged as staging:

        async def one(series_uid: str) -> None:
            async with limiter:
                folder = staging / series_uid
                os.mkdir(folder)
                job = _SeriesJob(session, study_uid, series_uid, folder, tally,
                                 transfer_syntax, concurrency)  # fmt: skip
                results[series_uid] = await job.run(strategy, fallback)

        async with task_group() as group:
            for series_uid in uids:
                group.start_soon(one, series_uid)
    series = tuple(
        SeriesResult(uid, dest / uid, tuple(dest / uid / f.name for f in results[uid].files),
                     results[uid].bytes)
        for uid in uids
    )  # fmt: skip
    return DownloadResult(dest, study_uid, series, time.perf_counter() - started)


async def _listed(uids: list[str]) -> AsyncGenerator[list[str], None]:
    """A known list of UIDs as the one page of a listing."""
    yield uids
