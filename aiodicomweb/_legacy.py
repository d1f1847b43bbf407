"""The documented legacy adapter API: `DicomWebAdapter` and `DicomWebAdapter_Fallback`.

Each camelCase method is one call into the blocking `DicomWebClient`, whose
methods in turn run the async core. The documented API is `docs/adapter-api.md`:
names, parameters, defaults, return values, folder layout and exceptions are
kept exactly.
"""

from __future__ import annotations

import os
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, ClassVar

from aiodicomweb._bulk_download import Strategy
from aiodicomweb._retry import RetryPolicy
from aiodicomweb._sync import DicomWebClient

if TYPE_CHECKING:
    import requests

__all__ = ["DicomWebAdapter", "DicomWebAdapter_Fallback"]

# The documented default, in the documented order.
_DEFAULT_CODES = (
    HTTPStatus.TOO_MANY_REQUESTS,
    HTTPStatus.REQUEST_TIMEOUT,
    HTTPStatus.SERVICE_UNAVAILABLE,
    HTTPStatus.GATEWAY_TIMEOUT,
)


def _proxy_for(url: str, proxies: dict[str, str] | None) -> str | None:
    """The one proxy of a requests-style mapping that applies to `url`."""
    if not proxies:
        return None
    scheme = url.split(":", 1)[0].lower()
    return proxies.get(scheme) or proxies.get("all")


def session_options(session: requests.Session, url: str) -> dict[str, Any]:
    """Client keyword arguments that reproduce a `requests.Session`.

    Basic auth, headers, cookies, TLS verification, client certificate and the
    proxy for the URL's scheme carry over.

    Raises:
        TypeError: the session holds something that cannot carry over (another
            auth scheme, hooks, default query parameters, custom adapters).
    """
    import requests  # the requests side is optional: only sessions need it

    if not isinstance(session, requests.Session):
        raise TypeError(f"session must be a requests.Session, not {type(session).__name__}")
    options: dict[str, Any] = {"headers": dict(session.headers), "cookies": session.cookies}
    auth: Any = session.auth
    if isinstance(auth, requests.auth.HTTPBasicAuth):
        auth = (auth.username, auth.password)
    if auth is not None and not (isinstance(auth, tuple) and len(auth) == 2):
        raise TypeError(
            f"session auth {type(auth).__name__} cannot carry over: only basic auth "
            "(a (user, password) tuple or HTTPBasicAuth); pass auth=httpx.Auth instead"
        )
    if any(session.hooks.get(name) for name in session.hooks):
        raise TypeError("session hooks cannot carry over to httpx; remove them")
    if session.params:
        raise TypeError("session default query params cannot carry over; remove them")
    for prefix, adapter in session.adapters.items():
        if type(adapter) is not requests.adapters.HTTPAdapter:
            raise TypeError(
                f"session adapter {type(adapter).__name__} for {prefix!r} cannot carry over"
            )
    proxy = _proxy_for(url, dict(session.proxies))
    options.update(auth=auth, verify=session.verify, cert=session.cert, proxy=proxy,
                   trust_env=session.trust_env)  # fmt: skip
    return options


def adapter_options(
    url: str,
    session: requests.Session | None,
    username: str | None,
    password: str,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Client keyword arguments from the adapter's documented constructor arguments.

    Raises:
        TypeError: an unusable session, or an unknown keyword (raised by the client).
    """
    options = dict(extra)
    if "proxies" in options:
        options["proxy"] = _proxy_for(url, options.pop("proxies"))
    if session is not None:
        options = {**session_options(session, url), **options}
    elif username is not None:
        options.setdefault("auth", (username, password))
    return options


def _check_root(root: str) -> None:
    """The documented OSError for a target root that is missing or not a folder."""
    if not os.path.exists(root):
        raise FileNotFoundError(2, "target folder root does not exist", root)
    if not os.path.isdir(root):
        raise NotADirectoryError(20, "target folder root is not a folder", root)


class DicomWebAdapter:
    """A simple API for a DICOMweb server (documented in `docs/adapter-api.md`).

    Args:
        dicomWebUrl: URL of the DICOMweb API, e.g. https://pacs.example.com/dicom-web
        session: Optional `requests.Session` whose basic auth, headers, cookies,
            TLS and proxy settings are reused.
        username: User for HTTP basic auth when no session is given.
        password: Its password.
        **additionalClientParameters: Keyword arguments of `DicomWebClient`
            (e.g. `delete_strategy="orthanc"`), plus the legacy `headers`,
            `qido_url_prefix`, `wado_url_prefix`, `stow_url_prefix`,
            `delete_url_prefix`, `proxies` and `chunk_size`.

    Raises:
        TypeError: an unknown keyword, or a session setting that cannot carry over.
    """

    _strategy: ClassVar[Strategy] = "multipart"

    def __init__(
        self,
        dicomWebUrl: str,
        session: requests.Session | None = None,
        username: str | None = None,
        password: str = "",
        **additionalClientParameters: Any,
    ) -> None:
        options = adapter_options(dicomWebUrl, session, username, password,
                                  additionalClientParameters)  # fmt: skip
        self._client = DicomWebClient(dicomWebUrl, **options)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._client!r}>"

    def __enter__(self) -> DicomWebAdapter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (also happens at garbage collection)."""
        self._client.close()

    def setHttpRetryParameters(
        self,
        retry: bool = True,
        max_attempts: int = 5,
        wait_exponential_multiplier: int = 1000,
        retriable_error_codes: tuple[HTTPStatus, ...] = _DEFAULT_CODES,
    ) -> None:
        """Sets parameters for HTTP retrying logic (`RetryPolicy.from_legacy`).

        Args:
            retry: Whether to retry at all; False ignores the other parameters.
            max_attempts: The maximum number of request attempts.
            wait_exponential_multiplier: Exponential multiplier of the delay
                between attempts, in milliseconds.
            retriable_error_codes: HTTP status codes that are retried.
        """
        self._client.retry = RetryPolicy.from_legacy(
            retry, max_attempts, wait_exponential_multiplier, retriable_error_codes
        )

    def getStudyInstanceUIDForSeries(self, seriesInstanceUID: str) -> str | None:
        """The study's instance UID for the series, or None (`find_study_uid`).

        Raises:
            ConnectionError: a problem accessing the server.
        """
        return self._client.find_study_uid(seriesInstanceUID)

    def getSeriesInstanceUIDsForStudy(self, studyInstanceUID: str) -> list[str]:
        """The series instance UIDs of the study, or an empty list (`list_series_uids`).

        Raises:
            ConnectionError: a problem accessing the server.
        """
        return self._client.list_series_uids(studyInstanceUID)

    def retrieveSeriesIntoFolder(
        self,
        studyInstanceUID: str,
        seriesInstanceUID: str,
        targetFolderRoot: str,
        useStudySubFolder: bool = True,
    ) -> None:
        """Fetch a series into `<targetFolderRoot>/[<study>/]<series>/file000000.dcm ...`.

        Delegates to `download_series` (create_parent for the study subfolder).

        Raises:
            OSError: `targetFolderRoot` not found or not writable, or the series
                subfolder already exists.
            ConnectionError: a problem accessing the server.
        """
        _check_root(targetFolderRoot)
        parent = (
            os.path.join(targetFolderRoot, studyInstanceUID)
            if useStudySubFolder
            else targetFolderRoot
        )
        self._client.download_series(
            studyInstanceUID, seriesInstanceUID, os.path.join(parent, seriesInstanceUID),
            strategy=self._strategy, create_parent=useStudySubFolder,
        )  # fmt: skip

    def retrieveStudyIntoFolder(self, studyInstanceUID: str, targetFolderRoot: str) -> None:
        """Fetch a study into `<targetFolderRoot>/<study>/<series>/...` (`download_study`).

        Raises:
            OSError: `targetFolderRoot` not found or not writable, or the study
                subfolder already exists.
            ConnectionError: a problem accessing the server.
        """
        _check_root(targetFolderRoot)
        self._client.download_study(
            studyInstanceUID, os.path.join(targetFolderRoot, studyInstanceUID),
            strategy=self._strategy, create_parent=False,
        )  # fmt: skip

    def deleteStudy(self, studyInstanceUID: str) -> None:
        """Delete a study from the PACS (`delete_study`; non-standard, see its strategies).

        Raises:
            ConnectionError: the server refused or could not be reached.
        """
        self._client.delete_study(studyInstanceUID)

    def deleteSeries(self, studyInstanceUID: str, seriesInstanceUID: str) -> None:
        """Delete a series from the PACS (`delete_series`).

        Raises:
            ConnectionError: the server refused or could not be reached.
        """
        self._client.delete_series(studyInstanceUID, seriesInstanceUID)

    def storeDirectory(self, sourceDirectory: str, include_regex: str | None = None) -> None:
        """Store every DICOM file under `sourceDirectory` (`store_directory`).

        Args:
            sourceDirectory: Directory to traverse recursively.
            include_regex: Regular expression (`re.search` on the path relative
                to `sourceDirectory`, `/` separators) restricting the files sent.

        Raises:
            StoreFailedError: some instances were not stored; the message lists
                them (also a ConnectionError).
            OSError: `sourceDirectory` is missing.
        """
        self._client.store_directory(sourceDirectory, include_regex).raise_for_failures()


class DicomWebAdapter_Fallback(DicomWebAdapter):
    """The same adapter, fetching series instance by instance (`strategy="per_instance"`)."""

    _strategy: ClassVar[Strategy] = "per_instance"
