"""Pure URL and query building for QIDO/WADO/STOW/DELETE."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from aiodicomweb._exceptions import DicomWebUsageError
from aiodicomweb._validate import positive_integer, validate_uid

__all__ = [
    "Level",
    "build_query",
    "extra_query",
    "qido_path",
    "redact_url",
    "rendered_query",
    "resource_path",
    "with_query",
]

Level = Literal["studies", "series", "instances"]

_TAG_RE = re.compile(r"\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?")
# Orthanc 1.10 / DICOMweb 1.7 does not percent-decode query values, so characters
# that are legal in a URI query stay literal; only delimiters and space are encoded.
_QUERY_SAFE = "^*?-._~,:/@!$'()"


def resource_path(
    study_uid: str | None = None, series_uid: str | None = None, sop_uid: str | None = None
) -> str:
    """`/studies/{s}[/series/{se}[/instances/{i}]]`, every UID validated."""
    path = "/studies/" + validate_uid(study_uid, "StudyInstanceUID")
    if series_uid is not None:
        path += "/series/" + validate_uid(series_uid, "SeriesInstanceUID")
    if sop_uid is not None:
        if series_uid is None:
            raise DicomWebUsageError("an instance needs its series UID")
        path += "/instances/" + validate_uid(sop_uid, "SOPInstanceUID")
    return path


def qido_path(level: Level, study_uid: str | None = None, series_uid: str | None = None) -> str:
    """The QIDO-RS resource for a search at `level`, scoped as far as UIDs are given.

    Every resource of PS3.18 10.6: `/studies`, `/series`, `/instances`,
    `/studies/{s}/series`, `/studies/{s}/instances`, `/studies/{s}/series/{se}/instances`.
    """
    if level not in ("studies", "series", "instances"):
        raise DicomWebUsageError(f"unknown QIDO level {level!r}: studies, series or instances")
    if level == "studies":
        if study_uid is not None or series_uid is not None:
            raise DicomWebUsageError("a study search takes no study or series UID scope")
        return "/studies"
    if series_uid is not None and level == "series":
        raise DicomWebUsageError("a series search cannot be scoped to a series")
    if series_uid is not None and study_uid is None:
        raise DicomWebUsageError("a series scope needs its study UID")
    if study_uid is None:
        return "/" + level
    return resource_path(study_uid, series_uid) + "/" + level


def _attribute(key: str | int) -> str:
    """Validate a match or include key: keyword, tag, or a dotted sequence path."""
    if isinstance(key, int):
        if isinstance(key, bool) or not 0 <= key <= 0xFFFFFFFF:
            raise DicomWebUsageError(f"not a DICOM tag: {key!r}")
        return f"{key:08X}"
    parts = []
    for piece in key.split("."):
        tag_match = _TAG_RE.fullmatch(piece)
        if tag_match:
            parts.append((tag_match.group(1) + tag_match.group(2)).upper())
        elif piece and _is_keyword(piece):
            parts.append(piece)
        else:
            raise DicomWebUsageError(f"unknown DICOM attribute in query: {key!r}")
    return ".".join(parts)


_KNOWN_KEYWORDS: set[str] = set()  # bounded by pydicom's data dictionary


def _is_keyword(name: str) -> bool:
    if name in _KNOWN_KEYWORDS:
        return True
    # Imported here, not at the top: pydicom takes 0.3-0.4 s to import, which the
    # downloads (they query by tag) would otherwise pay on their first search.
    from pydicom.datadict import tag_for_keyword

    if tag_for_keyword(name) is None:
        return False  # not remembered: a private dictionary may add it later
    _KNOWN_KEYWORDS.add(name)
    return True


def _format_value(value: object) -> str:
    if isinstance(value, bool):
        raise DicomWebUsageError(f"a boolean is not a DICOM match value: {value!r}")
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y%m%d%H%M%S")
    if isinstance(value, datetime.date):
        return value.strftime("%Y%m%d")
    if isinstance(value, datetime.time):
        return value.strftime("%H%M%S")
    if isinstance(value, tuple) and len(value) == 2:
        low, high = ("" if v is None else _format_value(v) for v in value)
        return f"{low}-{high}"
    if isinstance(value, (list, tuple)):
        return ",".join(_format_value(v) for v in value)
    if isinstance(value, (str, int, float)):
        return str(value)
    raise DicomWebUsageError(f"unsupported match value type: {type(value).__name__}")


# DICOM forms (PS3.5 6.2) and the ISO 8601 forms people type, for QIDO range matching.
_UID_LIKE = re.compile(r"[0-9.]*")
_FORMS = {
    "DA": (r"\d{8}", r"(\d{4})-(\d{2})-(\d{2})", "YYYYMMDD"),
    "TM": (r"\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?",
           r"(\d{2}):(\d{2})(?::(\d{2}(?:\.\d{1,6})?))?", "HHMMSS"),
    "DT": (r"\d{4}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?)?)?",
           r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2}(?:\.\d{1,6})?))?",
           "YYYYMMDDHHMMSS"),
}  # fmt: skip


def _date_time(attribute: str, text: str) -> str:
    """`text` as a DA, TM or DT match value when the attribute has that VR: ISO forms
    converted, anything else refused with the form expected; other VRs untouched."""
    vr = _vr(attribute.rsplit(".", 1)[-1])
    if vr not in _FORMS:
        return text
    dicom, iso, shown = _FORMS[vr]
    one = f"(?:{dicom}|{re.sub(r'[(](?![?])', '(?:', iso)})"
    match = re.fullmatch(f"({one})?(?:(-)({one})?)?", text)
    if not text or match is None or (match.group(2) and not (match.group(1) or match.group(3))):
        raise DicomWebUsageError(
            f"{attribute}={text!r} is not a {vr} value: use {shown}, or a range "
            f"{shown}-{shown} with either end left out"
        )
    low, dash, high = (_compact(part, iso) for part in match.groups())
    return f"{low}{dash}{high}"


def _compact(part: str | None, iso: str) -> str:
    if not part:
        return part or ""
    match = re.fullmatch(iso, part)
    return "".join(g for g in match.groups() if g) if match else part


def _vr(name: str) -> str | None:
    """The VR of a keyword or eight-digit tag in pydicom's dictionary, else None."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    tag = int(name, 16) if _TAG_RE.fullmatch(name) else tag_for_keyword(name)
    try:
        return None if tag is None else str(dictionary_VR(tag))
    except KeyError:
        return None


def build_query(
    match: Mapping[str | int, object] | None = None,
    *,
    include_fields: Iterable[str | int] | str | None = None,
    fuzzy: bool | None = None,
    limit: int | None = None,
    offset: int | None = None,
) -> str:
    """The QIDO-RS query string (without `?`), validated before any request.

    A 2-tuple value is a range (`(start, end)`, either may be None); a list is a
    UID list; dates and times are formatted as DICOM DA/TM/DT.

    Raises:
        DicomWebUsageError: unknown attribute, bad value, negative limit/offset.
    """
    pairs: list[tuple[str, str]] = []
    for key, value in (match or {}).items():
        attribute, text = _attribute(key), _format_value(value)
        if not _UID_LIKE.fullmatch(text):  # digits and dots need no VR (and no pydicom)
            text = _date_time(attribute, text)
        pairs.append((attribute, text))
    if isinstance(include_fields, str):
        include_fields = [include_fields]
    for field in include_fields or ():
        pairs.append(("includefield", "all" if field == "all" else _attribute(field)))
    if fuzzy is not None:
        pairs.append(("fuzzymatching", "true" if fuzzy else "false"))
    for name, number in (("limit", limit), ("offset", offset)):
        if number is not None:
            pairs.append((name, str(positive_integer(name, number, minimum=0))))
    return "&".join(f"{name}={quote(value, safe=_QUERY_SAFE)}" for name, value in pairs)


Params = Mapping[str, object]
_PARAM_NAME = re.compile(r"[A-Za-z0-9._~!$'()*+,;:@-]+")


def extra_query(params: Params | None) -> str:
    """`additional_params` (vendor extensions) as a query string, "" for none.

    A sequence value repeats the parameter; values are sent as QIDO values are.

    Raises:
        DicomWebUsageError: a name that is not a plain query name, or a value that
            is not text or a number.
    """
    pairs = []
    for name, value in (params or {}).items():
        if not isinstance(name, str) or not _PARAM_NAME.fullmatch(name):
            raise DicomWebUsageError(f"not a query parameter name: {name!r}")
        values = value if isinstance(value, (list, tuple)) else [value]
        for each in values:
            if isinstance(each, bool):
                each = "true" if each else "false"
            if not isinstance(each, (str, int, float)):
                raise DicomWebUsageError(f"query parameter {name}: not text or a number")
            pairs.append(f"{name}={quote(str(each), safe=_QUERY_SAFE)}")
    return "&".join(pairs)


def with_query(url: str, *queries: str) -> str:
    """`url` with the non-empty `queries` appended."""
    query = "&".join(q for q in queries if q)
    if not query:
        return url
    return f"{url}{'&' if '?' in url else '?'}{query}"


def rendered_query(
    viewport: tuple[int, int] | None, window: tuple[object, ...] | None, quality: int | None
) -> str:
    """The query of a rendered or thumbnail request ("" when there is none)."""
    params = [
        (name, ",".join(quote(str(v), safe="") for v in value))
        for name, value in (("viewport", viewport), ("window", window))
        if value is not None
    ]
    if quality is not None:
        params.append(("quality", str(int(quality))))
    return "&".join(f"{name}={value}" for name, value in params)


def redact_url(url: str) -> str:
    """`url` without user information, for messages, logs and reprs."""
    if "@" not in url:
        return url  # no user information without an `@` (the common case, every request)
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]  # keeps IPv6 brackets and the port
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
