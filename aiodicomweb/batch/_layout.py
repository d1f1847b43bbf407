"""Where a batch puts things, and how it knows that a series is complete.

`DIR/<study>/<series>/` holds a series, as the core's `download_series` leaves it
(renamed into place whole). Its completion record, written atomically after that
rename, is `DIR/.aiodicomweb-batch/<study>/<series>.json`: the record, never the
mere folder, says that the series is done. A folder without a record (a crash
between the rename and the record) is downloaded again, since its bytes cannot be
vouched for without asking the server for them all over again.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "RECORDS",
    "Record",
    "clear_series",
    "completed",
    "prepare_root",
    "record_path",
    "series_folder",
    "write_record",
]

RECORDS = ".aiodicomweb-batch"
_VERSION = 1


@dataclass(frozen=True)
class Record:
    """What a completed series holds: its files and their sizes."""

    files: dict[str, int]

    @property
    def instances(self) -> int:
        return len(self.files)

    @property
    def bytes(self) -> int:
        return sum(self.files.values())


def series_folder(root: Path, study_uid: str, series_uid: str) -> Path:
    return root / study_uid / series_uid


def record_path(root: Path, study_uid: str, series_uid: str) -> Path:
    return root / RECORDS / study_uid / f"{series_uid}.json"


def prepare_root(root: Path) -> None:
    """Make the batch's root and its record folder (`mkdir -p`)."""
    (root / RECORDS).mkdir(parents=True, exist_ok=True)


def completed(root: Path, study_uid: str, series_uid: str) -> Record | None:
    """The series' record when the series is complete: record read, folder as recorded."""
    try:
        data = json.loads(record_path(root, study_uid, series_uid).read_bytes())
        files = {str(name): int(size) for name, size in data["files"].items()}
        folder = series_folder(root, study_uid, series_uid)
        found = {entry.name: entry.stat().st_size for entry in os.scandir(folder)}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return Record(files) if files and found == files else None


def clear_series(root: Path, study_uid: str, series_uid: str) -> None:
    """Remove whatever an unfinished attempt left: its record, folder and staging folders.

    The record goes first: whatever happens next, a folder is never left recorded.
    Staging folders are the core's hidden `.<series>.<hex>.partial` siblings.
    """
    record = record_path(root, study_uid, series_uid)
    record.unlink(missing_ok=True)
    _remove_matching(record.parent, rf"\.{re.escape(series_uid)}\.[0-9a-f]+\.tmp")
    study = root / study_uid
    shutil.rmtree(series_folder(root, study_uid, series_uid), ignore_errors=True)
    _remove_matching(study, rf"\.{re.escape(series_uid)}\.[0-9a-f]+\.partial")


def _remove_matching(folder: Path, pattern: str) -> None:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return
    for name in names:
        if re.fullmatch(pattern, name):
            path = folder / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def write_record(root: Path, study_uid: str, series_uid: str, files: dict[str, int]) -> None:
    """Record a series as complete: a temporary file, flushed, then renamed into place."""
    path = record_path(root, study_uid, series_uid)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{series_uid}.{secrets.token_hex(4)}.tmp"
    body = {
        "version": _VERSION,
        "StudyInstanceUID": study_uid,
        "SeriesInstanceUID": series_uid,
        "files": files,
    }
    try:
        with temporary.open("w", encoding="utf-8") as stream:
            json.dump(body, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
