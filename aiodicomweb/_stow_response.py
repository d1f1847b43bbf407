"""The STOW-RS response model: what was stored, what failed and why.

Pure code without I/O. ``parse_store_response`` reads the Store Instances
Response Module (PS3.18 Annex I) a server returns, in DICOM JSON (PS3.18 Annex F)
or in the Native DICOM Model XML (PS3.19), and turns it into a ``StoreResult``.

The body is the truth about individual instances; the HTTP status only fills the
gaps the body leaves. Real servers need both halves of that rule: Orthanc 1.10.1
with DICOMweb 1.7 answers 409 while listing an instance it did store, and 400
without a Content-Type when some parts were not DICOM, listing the stored ones
and leaving the rejected parts out altogether.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiodicomweb._exceptions import StoreFailedError, UnexpectedResponseError, excerpt
from aiodicomweb._media import read_content_type

__all__ = [
    "FailedInstance",
    "SkippedFile",
    "StoreResult",
    "StoredInstance",
    "describe_failure",
    "describe_warning",
    "parse_store_response",
]

RETRIEVE_URL = "00081190"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_CLASS_UID = "00081150"
REFERENCED_SOP_INSTANCE_UID = "00081155"
WARNING_REASON = "00081196"
FAILURE_REASON = "00081197"

# PS3.18 Table I.2-1 (Store Instances Response Warning Reason Values).
_WARNING_REASONS = {
    0xB000: "coercion of data elements",
    0xB006: "elements discarded",
    0xB007: "data set does not match SOP class",
}

# PS3.18 Table I.2-2, completed with the general status codes of PS3.7 Annex C
# that storage servers also send.
_FAILURE_REASONS = {
    0x0110: "processing failure",
    0x0112: "no such object instance",
    0x0117: "invalid SOP instance",
    0x0119: "SOP class / instance conflict",
    0x0122: "SOP class not supported",
    0x0124: "not authorized",
    0x0210: "duplicate invocation",
    0x0211: "unrecognized operation",
    0x0212: "mistyped argument",
    0x0213: "resource limitation",
    0xC122: "transfer syntax not supported",
}
_FAILURE_RANGES = (
    (0xA700, 0xA7FF, "out of resources"),
    (0xA900, 0xA9FF, "data set does not match SOP class"),
    (0xC000, 0xCFFF, "cannot understand"),
)

_JSON_TYPES = frozenset({"application/json", "application/dicom+json"})
_XML_TYPES = frozenset({"application/xml", "text/xml", "application/dicom+xml"})
_TAG = re.compile(r"[0-9A-F]{8}")
_BOMS = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
_DTD_MARKERS = ("<!doctype", "<!entity")
_SUMMARY_FAILURES = 3

# tag (upper-case hex) -> values; the items of a sequence are _Dataset themselves.
_Dataset = dict[str, list[Any]]


def describe_warning(code: int) -> str:
    """Name a WarningReason (0008,1196) code, e.g. ``0xB000`` -> "coercion of data elements"."""
    return _WARNING_REASONS.get(code, f"warning reason 0x{code:04X}")


def describe_failure(code: int | None) -> str:
    """Name a FailureReason (0008,1197) code, e.g. ``0xA700`` -> "out of resources".

    ``None`` (the server gave no reason) reads "no reason given"; unknown codes
    read "failure reason 0x....".
    """
    if code is None:
        return "no reason given"
    if code in _FAILURE_REASONS:
        return _FAILURE_REASONS[code]
    for low, high, text in _FAILURE_RANGES:
        if low <= code <= high:
            return text
    return f"failure reason 0x{code:04X}"


@dataclass(frozen=True)
class StoredInstance:
    """An instance the server stored (an item of ReferencedSOPSequence 0008,1199).

    Attributes:
        sop_class_uid: ReferencedSOPClassUID (0008,1150).
        sop_instance_uid: ReferencedSOPInstanceUID (0008,1155).
        retrieve_url: RetrieveURL (0008,1190) of the instance, if the server gave one.
        warning_reason: WarningReason (0008,1196): stored, but with this warning.
    """

    sop_class_uid: str | None
    sop_instance_uid: str | None
    retrieve_url: str | None
    warning_reason: int | None

    @property
    def warning_text(self) -> str | None:
        """The warning's name ("coercion of data elements", ...), or None without one."""
        return None if self.warning_reason is None else describe_warning(self.warning_reason)


@dataclass(frozen=True)
class FailedInstance:
    """An instance the server did not store (an item of FailedSOPSequence 0008,1198).

    Both UIDs are None for a placeholder: the status said something failed but the
    body did not say what (see `parse_store_response`). A client that knows what it
    sent may replace the placeholder with one entry per unaccounted instance.

    Attributes:
        sop_class_uid: ReferencedSOPClassUID (0008,1150).
        sop_instance_uid: ReferencedSOPInstanceUID (0008,1155).
        failure_reason: FailureReason (0008,1197), or None when none was given.
        source: What the caller passed for this instance (a path, ``"<bytes #3>"``),
            filled in by the client when it knows.
    """

    sop_class_uid: str | None
    sop_instance_uid: str | None
    failure_reason: int | None
    source: str | None = None

    @property
    def failure_text(self) -> str:
        """The failure's name ("out of resources", ...); see `describe_failure`."""
        return describe_failure(self.failure_reason)

    @property
    def label(self) -> str:
        """The best name for the instance: its UID, else its source."""
        return self.sop_instance_uid or self.source or "unidentified instance(s)"


@dataclass(frozen=True)
class SkippedFile:
    """A file found in a folder and not sent: not DICOM, or a DICOMDIR.

    Attributes:
        path: The file.
        reason: Why it was not sent ("not DICOM", "DICOMDIR").
    """

    path: str
    reason: str


@dataclass(frozen=True)
class StoreResult:
    """The outcome of one or more STOW-RS requests.

    Attributes:
        stored: The instances the server stored, in the order it listed them.
        failed: The instances it did not store, including placeholders for
            failures it reported only through the HTTP status.
        retrieve_url: The study-level RetrieveURL (0008,1190); after `merge`, the
            one URL every response that stored something agreed on, else None.
        warnings: Notes about the exchange: HTTP ``Warning`` header values added by
            the client, and what this module noticed about the response.
        skipped: Files found in a folder that were not sent (not DICOM, DICOMDIR).
    """

    stored: tuple[StoredInstance, ...]
    failed: tuple[FailedInstance, ...]
    retrieve_url: str | None = None
    warnings: tuple[str, ...] = ()
    skipped: tuple[SkippedFile, ...] = ()

    @property
    def ok(self) -> bool:
        """True when nothing failed (instances stored with a warning count as stored)."""
        return not self.failed

    @classmethod
    def empty(cls) -> StoreResult:
        """The result of storing nothing; the identity of `merge`."""
        return cls(stored=(), failed=())

    def merge(self, other: StoreResult) -> StoreResult:
        """Combine the results of two batches: entries and warnings are concatenated."""
        return StoreResult(
            stored=self.stored + other.stored,
            failed=self.failed + other.failed,
            retrieve_url=_merge_url(self, other),
            warnings=self.warnings + other.warnings,
            skipped=self.skipped + other.skipped,
        )

    def raise_for_failures(self) -> StoreResult:
        """Return self when nothing failed, else raise, naming every failed instance.

        Raises:
            StoreFailedError: at least one instance was not stored.
        """
        if self.ok:
            return self
        names = ", ".join(f"{item.label} ({item.failure_text})" for item in self.failed)
        raise StoreFailedError(f"{len(self.failed)} instance(s) not stored: {names}", result=self)

    def summary(self) -> str:
        """One line for people, e.g. "12 stored, 1 failed (1.2.3: out of resources), 1 skipped:
        not DICOM"."""
        text = f"{len(self.stored)} stored, {len(self.failed)} failed"
        reasons = [f"{item.label}: {item.failure_text}" for item in self.failed]
        if len(reasons) > _SUMMARY_FAILURES:
            hidden = len(reasons) - _SUMMARY_FAILURES
            reasons = [*reasons[:_SUMMARY_FAILURES], f"and {hidden} more"]
        if reasons:
            text += f" ({'; '.join(reasons)})"
        warned = sum(item.warning_reason is not None for item in self.stored)
        text += f", {warned} stored with warnings" if warned else ""
        if self.skipped:
            counts = Counter(item.reason for item in self.skipped)
            text += f", {len(self.skipped)} skipped: " + ", ".join(
                reason if len(counts) == 1 else f"{count} {reason}"
                for reason, count in counts.items()
            )
        return text


def _merge_url(first: StoreResult, second: StoreResult) -> str | None:
    # A result with nothing stored and no URL is neutral; any other disagreement
    # (two studies, or stored instances without a URL) leaves no single study URL.
    # This keeps merge associative, so folding batch results in any grouping agrees.
    if not first.stored and first.retrieve_url is None:
        return second.retrieve_url
    if not second.stored and second.retrieve_url is None:
        return first.retrieve_url
    return first.retrieve_url if first.retrieve_url == second.retrieve_url else None


def parse_store_response(status: int, content_type: str | None, body: bytes) -> StoreResult:
    """Read a STOW-RS response into a `StoreResult`.

    The body decides what was stored and what failed, whatever the status. The
    status decides what happens when the body falls short:

    - 200 (and other 2xx but 202): an empty body means nothing to report.
    - 202: the server says something went wrong. When it names no failed instance
      and no stored instance carries a warning, a placeholder `FailedInstance`
      (no UIDs, no reason) stands for the unnamed failures, so ``ok`` is False.
    - 409, and any other error status: the body is read the same way (Orthanc 1.7
      lists instances it did store under a 409). Without a named failure, the
      same placeholder is added; an empty or unreadable body gives the
      placeholder and a note in ``warnings`` instead of an exception. Orthanc 1.7
      answers 400 with a full body when some parts were not DICOM, so a client
      may pass such responses here too.

    Each placeholder comes with a note in ``warnings``.

    Args:
        status: The HTTP status code.
        content_type: The Content-Type header, or None when the server sent none
            (Orthanc omits it on 400 and 409); the body is then sniffed.
        body: The whole response body.

    Returns:
        The stored and failed instances, the study RetrieveURL and notes.

    Raises:
        UnexpectedResponseError: Under a 2xx status, the body is not DICOM JSON or
            XML, is malformed, declares a DTD, or has an unsupported media type.
    """
    try:
        result = _read_body(content_type, body)
    except UnexpectedResponseError as exc:
        if 200 <= status < 300:
            raise
        note = f"HTTP {status} with an unreadable body ({exc.message})"
        return _with_placeholder(StoreResult.empty(), note)
    return _apply_status(status, result)


def _apply_status(status: int, result: StoreResult) -> StoreResult:
    if 200 <= status < 300 and status != 202:
        return result
    warned = any(item.warning_reason is not None for item in result.stored)
    if result.failed or (status == 202 and warned):
        return result
    return _with_placeholder(result, f"HTTP {status} but no failed instance was listed")


def _with_placeholder(result: StoreResult, note: str) -> StoreResult:
    placeholder = FailedInstance(sop_class_uid=None, sop_instance_uid=None, failure_reason=None)
    return StoreResult(
        stored=result.stored,
        failed=(*result.failed, placeholder),
        retrieve_url=result.retrieve_url,
        warnings=(*result.warnings, f"{note}; some instances were not stored"),
    )


def _read_body(content_type: str | None, body: bytes) -> StoreResult:
    parsed = read_content_type(content_type)
    media_type, charset = parsed.media_type, parsed.param("charset") or None
    text = _decode(body, charset)
    if not text.strip():
        return StoreResult.empty()
    kind = _kind(media_type, text)
    if kind == "json":
        dataset = _load_json(text)
    elif kind == "xml":
        dataset = _load_xml(text)
    elif media_type:
        raise _unexpected(f"unsupported media type {media_type!r}", text)
    else:
        raise _unexpected("no Content-Type and neither JSON nor XML", text)
    return _result_from(dataset)


def _decode(body: bytes, charset: str | None) -> str:
    for bom, codec in _BOMS:
        if body.startswith(bom):
            charset = codec
            break
    try:
        return body.decode(charset or "utf-8")
    except LookupError:
        return _decode(body, None)
    except UnicodeDecodeError as exc:
        text = body.decode("utf-8", "replace")
        raise _unexpected(f"undecodable body ({exc.reason})", text) from None


def _kind(media_type: str, text: str) -> str:
    if media_type in _JSON_TYPES or media_type.endswith("+json"):
        return "json"
    if media_type in _XML_TYPES or media_type.endswith("+xml"):
        return "xml"
    if media_type:
        return "other"
    start = text.lstrip()[:1]
    return {"{": "json", "[": "json", "<": "xml"}.get(start, "other")


def _unexpected(problem: str, text: str) -> UnexpectedResponseError:
    return UnexpectedResponseError(f"STOW-RS response: {problem}: {excerpt(text)}")


def _load_json(text: str) -> _Dataset:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _unexpected(f"invalid JSON ({exc})", text) from None
    if isinstance(document, list) and len(document) <= 1:
        document = document[0] if document else {}
    if not isinstance(document, dict):
        raise _unexpected("JSON is not one DICOM dataset", text)
    dataset = _json_dataset(document, text, depth=0)
    if document and not dataset:
        raise _unexpected("JSON holds no DICOM attribute", text)
    return dataset


def _json_dataset(document: dict[Any, Any], text: str, depth: int) -> _Dataset:
    dataset: _Dataset = {}
    for key, attribute in document.items():
        tag = str(key).upper()
        if not _TAG.fullmatch(tag):
            continue
        values = attribute.get("Value", []) if isinstance(attribute, dict) else None
        if not isinstance(values, list):
            raise _unexpected(f"malformed DICOM JSON attribute {tag}", text)
        # Only sequence items one level down matter; deeper nesting is left alone.
        nested = depth == 0
        dataset[tag] = [
            _json_dataset(value, text, 1) if nested and isinstance(value, dict) else value
            for value in values
        ]
    return dataset


def _load_xml(text: str) -> _Dataset:
    # A DTD is the only way to declare entities; refusing it shuts out entity
    # expansion attacks (billion laughs) and external entities. The check runs on
    # the decoded text the parser will see, so no encoding trick slips past it.
    lowered = text.lower()
    if any(marker in lowered for marker in _DTD_MARKERS):
        raise _unexpected("XML with a DTD is refused", text)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise _unexpected(f"invalid XML ({exc})", text) from None
    if _local_name(root.tag) != "NativeDicomModel":
        raise _unexpected("XML is not a NativeDicomModel", text)
    return _xml_dataset(root, depth=0)


def _xml_dataset(element: ET.Element, depth: int) -> _Dataset:
    dataset: _Dataset = {}
    for attribute in element:
        tag = (attribute.get("tag") or "").upper()
        if _local_name(attribute.tag) != "DicomAttribute" or not _TAG.fullmatch(tag):
            continue
        children = [(_local_name(child.tag), child) for child in attribute]
        if attribute.get("vr") == "SQ" or any(name == "Item" for name, _ in children):
            # Orthanc 1.7 puts stray empty <Value> elements between the Items.
            items = [child for name, child in children if name == "Item"]
            dataset[tag] = [_xml_dataset(item, depth + 1) for item in items] if depth == 0 else []
        else:
            dataset[tag] = [child.text or "" for name, child in children if name == "Value"]
    return dataset


def _local_name(tag: str) -> str:
    return tag.rpartition("}")[2]


def _result_from(dataset: _Dataset) -> StoreResult:
    stored = tuple(
        StoredInstance(
            sop_class_uid=_text(item, REFERENCED_SOP_CLASS_UID),
            sop_instance_uid=_text(item, REFERENCED_SOP_INSTANCE_UID),
            retrieve_url=_text(item, RETRIEVE_URL),
            warning_reason=_number(item, WARNING_REASON),
        )
        for item in _items(dataset, REFERENCED_SOP_SEQUENCE)
    )
    failed = tuple(
        FailedInstance(
            sop_class_uid=_text(item, REFERENCED_SOP_CLASS_UID),
            sop_instance_uid=_text(item, REFERENCED_SOP_INSTANCE_UID),
            failure_reason=_number(item, FAILURE_REASON),
        )
        for item in _items(dataset, FAILED_SOP_SEQUENCE)
    )
    return StoreResult(stored=stored, failed=failed, retrieve_url=_text(dataset, RETRIEVE_URL))


def _items(dataset: _Dataset, tag: str) -> list[_Dataset]:
    return [item for item in dataset.get(tag, []) if isinstance(item, dict)]


def _text(dataset: _Dataset, tag: str) -> str | None:
    values = dataset.get(tag)
    if not values or not isinstance(values[0], str):
        return None
    # UI values may keep their NUL padding; text values their trailing spaces.
    return values[0].strip(" \t\r\n\x00") or None


def _number(dataset: _Dataset, tag: str) -> int | None:
    values = dataset.get(tag)
    value = values[0] if values else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        digits = value.strip()
        try:
            return int(digits, 16) if digits.lower().startswith("0x") else int(digits)
        except ValueError:
            return None
    return None
