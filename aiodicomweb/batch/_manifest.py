"""Manifests: CSV (a header row) or JSON lines, one study or series per row.

IDC and TCIA exports name their columns `StudyInstanceUID` and `SeriesInstanceUID`;
a row without a series stands for the whole study, other columns are ignored.
Parsing is pure: every UID is checked here, so that a bad row is reported with
its line number before anything is downloaded.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from aiodicomweb import DicomWebUsageError, InvalidUIDError, validate_uid

__all__ = [
    "SERIES",
    "STUDY",
    "InvalidRow",
    "Manifest",
    "ManifestError",
    "ManifestRow",
    "parse_manifest",
    "read_manifest",
]

STUDY, SERIES = "StudyInstanceUID", "SeriesInstanceUID"
_SHOWN_ROWS = 20


class ManifestError(DicomWebUsageError):
    """A manifest cannot be read, or has invalid rows; nothing was downloaded.

    Attributes:
        invalid: The invalid rows, each with its line number.
    """

    def __init__(self, message: str, invalid: Iterable[InvalidRow] = ()) -> None:
        self.invalid = tuple(invalid)
        shown = [f"line {row.line}: {row.reason}" for row in self.invalid[:_SHOWN_ROWS]]
        if len(self.invalid) > _SHOWN_ROWS:
            shown.append(f"and {len(self.invalid) - _SHOWN_ROWS} more")
        super().__init__("; ".join([message, *shown]))


@dataclass(frozen=True)
class ManifestRow:
    """One valid row: a study (`series_uid` None) or one of its series."""

    line: int
    study_uid: str
    series_uid: str | None = None


@dataclass(frozen=True)
class InvalidRow:
    """A row that cannot be downloaded, and why.

    Attributes:
        line: Its line number in the manifest (the header is line 1 of a CSV).
        reason: What is wrong, quoting the value.
        error_type: `InvalidUIDError` for a malformed UID, else `ManifestError`.
    """

    line: int
    reason: str
    error_type: str = "ManifestError"


@dataclass(frozen=True)
class Manifest:
    """The rows of a manifest, valid and invalid, in manifest order."""

    rows: tuple[ManifestRow, ...]
    invalid: tuple[InvalidRow, ...] = ()
    source: str = "manifest"

    def check(self) -> None:
        """Raises `ManifestError` listing the invalid rows, if there are any."""
        if self.invalid:
            count = len(self.invalid)
            noun = "an invalid row" if count == 1 else f"{count} invalid rows"
            raise ManifestError(
                f"{self.source} has {noun}, so nothing was downloaded (fix them, or skip "
                "them with skip_invalid / --skip-invalid)",
                self.invalid,
            )


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read a CSV or JSON-lines manifest (JSON lines when the first character is `{`).

    Raises:
        ManifestError: not UTF-8 text, or a CSV without a StudyInstanceUID column.
        OSError: the file cannot be read.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ManifestError(f"{os.fspath(path)} is not UTF-8 text") from None
    return parse_manifest(text, source=Path(path).name)


def parse_manifest(text: str, source: str = "manifest") -> Manifest:
    """Parse manifest text; the format is told by its first character.

    Raises:
        ManifestError: a CSV without a header naming StudyInstanceUID.
    """
    rows: list[ManifestRow] = []
    invalid: list[InvalidRow] = []
    parse = _jsonl_rows if text.lstrip().startswith("{") else _csv_rows
    for line, study, series in parse(text, source):
        row = _checked(line, study, series)
        if isinstance(row, ManifestRow):
            rows.append(row)
        else:
            invalid.append(row)
    return Manifest(tuple(rows), tuple(invalid), source)


RawRow = tuple[int, object, object]
# Stand-ins for a study UID, for lines that hold no JSON object at all.
_NOT_JSON, _NOT_OBJECT = object(), object()


def _csv_rows(text: str, source: str) -> Iterator[RawRow]:
    """(line, study, series) per non-blank record; the header names the columns."""
    reader = csv.reader(text.splitlines(keepends=True))
    header = next(reader, None)
    names = [name.strip().lower() for name in header or []]
    if STUDY.lower() not in names:
        raise ManifestError(f"{source}: the header row has no {STUDY} column")
    if names.count(STUDY.lower()) > 1 or names.count(SERIES.lower()) > 1:
        raise ManifestError(f"{source}: the header row names a UID column twice")
    study_at = names.index(STUDY.lower())
    series_at = names.index(SERIES.lower()) if SERIES.lower() in names else None
    for record in reader:
        if not any(cell.strip() for cell in record):
            continue
        study = record[study_at] if study_at < len(record) else ""
        series = record[series_at] if series_at is not None and series_at < len(record) else ""
        yield reader.line_num, study, series


def _jsonl_rows(text: str, source: str) -> Iterator[RawRow]:
    """(line, study, series) per non-blank line; a line that is not an object is invalid."""
    for line, content in enumerate(text.splitlines(), start=1):
        if not content.strip():
            continue
        try:
            value = json.loads(content)
        except ValueError:
            yield line, _NOT_JSON, None
            continue
        if not isinstance(value, dict):
            yield line, _NOT_OBJECT, None
            continue
        yield line, value.get(STUDY, ""), value.get(SERIES)


def _checked(line: int, study: object, series: object) -> ManifestRow | InvalidRow:
    """A valid row, or the reason it is not."""
    if study is _NOT_JSON:
        return InvalidRow(line, "not a JSON object on one line")
    if study is _NOT_OBJECT:
        return InvalidRow(line, f"not a JSON object with a {STUDY} key")
    study = study.strip() if isinstance(study, str) else study
    series = series.strip() if isinstance(series, str) else series
    if study in ("", None):
        return InvalidRow(line, f"no {STUDY}")
    try:
        validate_uid(study, STUDY)
        if series not in ("", None):
            validate_uid(series, SERIES)
    except InvalidUIDError as error:
        return InvalidRow(line, str(error), "InvalidUIDError")
    assert isinstance(study, str)
    return ManifestRow(line, study, series if isinstance(series, str) and series else None)
