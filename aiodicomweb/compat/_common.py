"""What both compat clients share: the peer's constructor and settings, argument
mapping onto the core, and the conversion of its results (no I/O of their own)."""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import urlsplit

import httpx
import pydicom
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag

from aiodicomweb import ClientClosedError, RetryPolicy, StoreResult
from aiodicomweb._legacy import session_options
from aiodicomweb._urls import redact_url

if TYPE_CHECKING:
    import requests

__all__ = [
    "DEFAULT_RETRIABLE",
    "PAGE_SIZE",
    "Core",
    "JSONDataset",
    "MediaTypes",
    "PeerClient",
    "core_range",
    "dicom_syntax",
    "part_types",
    "read_dataset",
    "rendered_types",
    "search_arguments",
    "search_scope",
    "store_response",
]

logger = logging.getLogger("aiodicomweb")

# The peer's types: acceptable media types, each optionally with a transfer syntax.
MediaTypes = tuple[str | tuple[str, str], ...]
JSONDataset = dict[str, Any]  # a DICOM JSON dataset, as the peer types it

# The peer's default retriable statuses, in its order.
DEFAULT_RETRIABLE = (
    HTTPStatus.TOO_MANY_REQUESTS,
    HTTPStatus.REQUEST_TIMEOUT,
    HTTPStatus.SERVICE_UNAVAILABLE,
    HTTPStatus.GATEWAY_TIMEOUT,
)
PAGE_SIZE = 100  # results per request of `get_remaining` when no `limit` is given
_DICOM = "application/dicom"
_PREFIXES = ("qido_url_prefix", "wado_url_prefix", "stow_url_prefix", "delete_url_prefix")
_DEFAULT_PORTS = {"http": 80, "https": 443}

Core = TypeVar("Core")


def _proxy(url: str, proxies: Mapping[str, str] | None) -> str | None:
    """The proxy a requests-style `proxies` mapping gives `url`, with requests' precedence."""
    if not proxies:
        return None
    parts = urlsplit(url)
    keys = (f"{parts.scheme}://{parts.hostname}", parts.scheme, f"all://{parts.hostname}", "all")
    proxy = next((proxies[key] for key in keys if proxies.get(key)), None)
    if proxy is not None and "://" not in proxy:
        proxy = "http://" + proxy  # requests reads a bare host as an http proxy
    return proxy


def _timeout(timeout: float | tuple[Any, ...] | None) -> float | httpx.Timeout | None:
    """requests' timeout (seconds, or `(connect, read)`) as the core takes it."""
    if isinstance(timeout, tuple):
        connect, read = timeout
        return httpx.Timeout(read, connect=connect)
    return timeout


def _core_options(
    url: str,
    session: requests.Session | None,
    proxies: dict[str, str] | None,
    headers: dict[str, str] | None,
    timeout: float | tuple[Any, ...],
) -> dict[str, Any]:
    """Core constructor arguments for the peer's: a session's settings, then the others."""
    options: dict[str, Any] = {} if session is None else session_options(session, url)
    if headers is not None:  # the peer adds them to the session's
        options["headers"] = {**options.get("headers", {}), **headers}
    if proxies is not None:  # the peer replaces the session's
        options["proxy"] = _proxy(url, proxies)
    options["timeout"] = _timeout(timeout)
    return options


class PeerClient(Generic[Core]):
    """The peer's constructor, URL attributes and settings; a subclass runs the core.

    The core client is made with the current settings; changing a URL prefix,
    the chunk size or the retry parameters makes a new one for the next call.

    Args:
        url: The DICOMweb base URL (http or https).
        session: A `requests.Session` whose auth, headers, cookies, TLS and proxy
            settings carry over (what cannot is refused with a TypeError).
        qido_url_prefix: Path segment for QIDO-RS (likewise WADO, STOW, DELETE).
        proxies: requests-style `{"https": "http://proxy:3128"}`.
        headers: Headers sent with every request, added to the session's.
        callback: requests response hook: not supported (TypeError), the core is httpx.
        chunk_size: Bytes per read of what is stored.
        permissive_uid: Accepted; UIDs are still checked (digits and dots).
        timeout: Seconds, or `(connect, read)`.

    Raises:
        ValueError: a URL that is not http(s), or an empty prefix.
        TypeError: a callback, or session settings that cannot carry over.
    """

    def __init__(
        self,
        url: str,
        session: requests.Session | None = None,
        qido_url_prefix: str | None = None,
        wado_url_prefix: str | None = None,
        stow_url_prefix: str | None = None,
        delete_url_prefix: str | None = None,
        proxies: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        callback: Callable[..., Any] | None = None,
        chunk_size: int = 10**6,
        permissive_uid: bool = False,
        timeout: float | tuple[Any, ...] = 20,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"Malformed URL or unsupported scheme: {redact_url(url)}")
        if callback is not None:
            raise TypeError("callback is a requests response hook; aiodicomweb runs on httpx")
        if permissive_uid:
            warnings.warn("permissive_uid: aiodicomweb still refuses UIDs that are not "
                          "digits and dots", stacklevel=3)  # fmt: skip
        self.base_url = url
        self.scheme = self.protocol = parts.scheme
        self.host: str = parts.hostname
        self.port: int = parts.port or _DEFAULT_PORTS[parts.scheme]
        self.url_prefix = parts.path
        self._prefixes: dict[str, str | None] = {}
        for name, value in zip(_PREFIXES, (qido_url_prefix, wado_url_prefix, stow_url_prefix,
                                           delete_url_prefix), strict=True):  # fmt: skip
            self._set_prefix(name, value)
        self._options = _core_options(url, session, proxies, headers, timeout)
        self._chunk_size = chunk_size
        self._retry = RetryPolicy.from_legacy()
        self._core: Core | None = None
        self._retired: list[Core] = []  # made for older settings; closed with the client
        self._closed = False
        self._core = self._client()  # settings are checked here, not at the first call

    def _open(self, options: dict[str, Any]) -> Core:
        """A new core client with these constructor arguments."""
        raise NotImplementedError

    def _client(self) -> Core:
        """The core client for the current settings.

        Raises:
            ClientClosedError: the client was closed.
        """
        if self._closed:
            raise ClientClosedError(f"this {type(self).__name__} is closed")
        if self._core is None:
            options = {**self._options, **self._prefixes}
            self._core = self._open(
                {**options, "chunk_size": self._chunk_size, "retry": self._retry}
            )
        return self._core

    def _changed(self) -> None:
        """Settings changed: the next call runs on a new core client."""
        if self._core is not None:
            self._retired.append(self._core)  # a call may still be using it
            self._core = None

    def _cores(self) -> list[Core]:
        """Every core client made, to close them all: the client is closed from now on."""
        self._closed = True
        cores, self._retired = self._retired, []
        return cores if self._core is None else [*cores, self._core]

    def _set_prefix(self, name: str, value: str | None) -> None:
        if value == "":
            raise ValueError(f'Argument "{name}" must not be a zero length string.')
        self._prefixes[name] = value

    @property
    def qido_url_prefix(self) -> str | None:
        """URL path prefix for QIDO-RS (settable)."""
        return self._prefixes["qido_url_prefix"]

    @qido_url_prefix.setter
    def qido_url_prefix(self, value: str | None) -> None:
        self._set_prefix("qido_url_prefix", value)
        self._changed()

    @property
    def wado_url_prefix(self) -> str | None:
        """URL path prefix for WADO-RS (settable)."""
        return self._prefixes["wado_url_prefix"]

    @wado_url_prefix.setter
    def wado_url_prefix(self, value: str | None) -> None:
        self._set_prefix("wado_url_prefix", value)
        self._changed()

    @property
    def stow_url_prefix(self) -> str | None:
        """URL path prefix for STOW-RS (settable)."""
        return self._prefixes["stow_url_prefix"]

    @stow_url_prefix.setter
    def stow_url_prefix(self, value: str | None) -> None:
        self._set_prefix("stow_url_prefix", value)
        self._changed()

    @property
    def delete_url_prefix(self) -> str | None:
        """URL path prefix for DELETE (settable)."""
        return self._prefixes["delete_url_prefix"]

    @delete_url_prefix.setter
    def delete_url_prefix(self, value: str | None) -> None:
        self._set_prefix("delete_url_prefix", value)
        self._changed()

    def set_chunk_size(self, chunk_size: int) -> None:
        """Set the bytes per read of what is stored."""
        self._chunk_size = chunk_size
        self._changed()

    def set_http_retry_params(
        self,
        retry: bool = True,
        max_attempts: int = 5,
        wait_exponential_multiplier: int = 1000,
        retriable_error_codes: tuple[HTTPStatus, ...] = DEFAULT_RETRIABLE,
    ) -> None:
        """Set how requests are retried (`RetryPolicy.from_legacy`; the multiplier is in ms)."""
        self._retry = RetryPolicy.from_legacy(
            retry, max_attempts, wait_exponential_multiplier, retriable_error_codes
        )
        self._changed()

    @staticmethod
    def lookup_keyword(tag: str | int | tuple[int, int] | BaseTag) -> str:
        """The keyword of a DICOM attribute tag (`"00080018"` -> `"SOPInstanceUID"`).

        Raises:
            KeyError: the dictionary has no such tag.
        """
        keyword = pydicom.datadict.keyword_for_tag(tag)
        if not keyword:
            raise KeyError(f"Could not find a keyword for tag {tag}.")
        return keyword

    @staticmethod
    def lookup_tag(keyword: str) -> str:
        """The tag of a DICOM attribute as eight hex digits (`"SOPInstanceUID"` -> `"00080018"`).

        Raises:
            KeyError: the dictionary has no such keyword.
        """
        tag = pydicom.datadict.tag_for_keyword(keyword)
        if tag is None:
            raise KeyError(f'Could not find a tag for "{keyword}".')
        return f"{Tag(tag):08X}"


# -- arguments ---------------------------------------------------------------------------


def _items(media_types: object) -> list[str | tuple[str, ...]]:
    if not isinstance(media_types, (list, tuple, set)):
        raise TypeError("Acceptable media types must be provided as a sequence.")
    return list(media_types)


def dicom_syntax(media_types: MediaTypes | None, what: str, default: str | None) -> str | None:
    """The core's `transfer_syntax` for the peer's `media_types` of a DICOM retrieval.

    Several acceptable transfer syntaxes become one: `*` when listed, else the first.

    Raises:
        TypeError: not a sequence.
        ValueError: a media type other than application/dicom.
    """
    if media_types is None:
        return default
    syntaxes = []
    for item in _items(media_types):
        kind, syntax = (item, None) if isinstance(item, str) else (item[0], (*item, None)[1])
        if kind != _DICOM:
            raise ValueError(f'Media type "{kind}" is not supported for retrieval of {what}. '
                             'It must be "application/dicom".')  # fmt: skip
        syntaxes.append(syntax)
    if not syntaxes:
        raise ValueError("No acceptable media types provided.")
    return "*" if "*" in syntaxes else syntaxes[0]


def part_types(media_types: MediaTypes | None) -> str | list[str | tuple[str, str | None]]:
    """The core's `media_type` for frames or bulk data (`*/*` when none is given)."""
    if media_types is None:
        return "*/*"
    return [
        item if isinstance(item, str) else (item[0], (*item, None)[1])
        for item in _items(media_types)
    ]


def rendered_types(media_types: MediaTypes | None) -> str | list[str]:
    """The core's `media_type` of a rendered resource (`*/*` when none is given).

    Raises:
        TypeError: a transfer syntax given with a rendered media type.
    """
    if media_types is None:
        return "*/*"
    kinds = _items(media_types)
    for kind in kinds:
        if not isinstance(kind, str):
            raise TypeError(f'Media type "{kind}" is not supported for requested resource')
    return [str(kind) for kind in kinds]


def core_range(value: tuple[int, ...] | None) -> tuple[int, int | None] | None:
    """The peer's `(start, end)` or `(start,)` as the core's `(first, last)`."""
    if value is None:
        return None
    return value[0], (*value, None)[1]


def search_arguments(
    fuzzymatching: bool | None,
    fields: Sequence[str] | None,
    search_filters: dict[str, Any] | None,
    additional_params: dict[str, Any] | None,
) -> dict[str, Any]:
    """The core's search keywords for the peer's (limit and offset pass as they are)."""
    return {"match": search_filters, "include_fields": fields, "fuzzy": fuzzymatching,
            "additional_params": additional_params}  # fmt: skip


def search_scope(study: str | None, series: str | None) -> tuple[str | None, str | None]:
    """The peer ignores a series UID given without its study UID (and says so)."""
    if series is not None and study is None:
        logger.warning("series UID is ignored because study UID is undefined")
        return None, None
    return study, series


# -- results -----------------------------------------------------------------------------


def read_dataset(data: bytes) -> Dataset:
    """A Part 10 instance's bytes as a pydicom Dataset."""
    return pydicom.dcmread(io.BytesIO(data))


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        if value is not None:
            setattr(item, keyword, value)
    return item


def store_response(result: StoreResult) -> Dataset:
    """The STOW-RS response Dataset the peer returns, made from the core's `StoreResult`.

    Raises:
        StoreFailedError: nothing was stored and something failed (where the
            server's 409 or 400 made the peer raise).
    """
    for failed in result.failed:
        logger.error('storage of instance %s failed: "%s"', failed.label, failed.failure_text)
    if result.failed and not result.stored:
        result.raise_for_failures()
    response = _item(RetrieveURL=result.retrieve_url)
    # Both sequences, empty or not, as Orthanc sends them: reading either never fails.
    response.FailedSOPSequence = [
        _item(ReferencedSOPClassUID=item.sop_class_uid,
              ReferencedSOPInstanceUID=item.sop_instance_uid, FailureReason=item.failure_reason)
        for item in result.failed
    ]  # fmt: skip
    response.ReferencedSOPSequence = [
        _item(ReferencedSOPClassUID=item.sop_class_uid,
              ReferencedSOPInstanceUID=item.sop_instance_uid,
              RetrieveURL=item.retrieve_url, WarningReason=item.warning_reason)
        for item in result.stored
    ]  # fmt: skip
    return response
