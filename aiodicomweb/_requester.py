"""One request, done right: retries, error translation, status checks, redaction.

Every transaction goes through `Requester.request` (buffered) or
`Requester.stream` (streamed); nothing else touches httpx's send path.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import asynccontextmanager, suppress
from http import HTTPStatus
from typing import Any

import httpx

from aiodicomweb._direct import DirectGets
from aiodicomweb._exceptions import (
    ClientClosedError,
    DicomWebError,
    DicomWebHTTPError,
    excerpt,
    translate_httpx_error,
)
from aiodicomweb._inflate import DEFAULT_LIMITS, InflateLimits, content_encoding, read_body
from aiodicomweb._retry import RetryPolicy, parse_retry_after, retrying
from aiodicomweb._urls import redact_url

__all__ = ["ContentFactory", "Requester"]

logger = logging.getLogger("aiodicomweb")
_ERROR_BODY_LIMIT = 4096
ContentFactory = Callable[[], Any]


class Requester:
    """Sends requests through one `httpx.AsyncClient` under the project's retry and error rules."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        retry: RetryPolicy | None,
        direct: DirectGets | None = None,
        inflate: InflateLimits = DEFAULT_LIMITS,
    ) -> None:
        self.http = http
        self.retry = retry
        self.direct = direct
        self.inflate = inflate
        self.closed = False

    async def aclose(self) -> None:
        """Close every connection; every request after this raises `ClientClosedError`."""
        self.closed = True
        await self.http.aclose()

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: ContentFactory | None = None,
        ok: Collection[int] = (200,),
    ) -> httpx.Response:
        """Send a request and read its whole body, retrying per the policy.

        Args:
            content: Builds the request body afresh for each attempt (a retry
                must not reuse a consumed stream).
            ok: Statuses that count as an answer; anything else raises.

        Raises:
            DicomWebHTTPError: a status outside `ok` after retries.
            DicomWebTransportError: the connection failed after retries.
        """

        async def attempt() -> httpx.Response:
            body = content() if content is not None else None
            response = await self._send(method, url, headers, body)
            what = f"{method} {redact_url(url)}"
            try:
                if response.status_code not in ok:
                    await self._raise_status(response, method, url)
                if content_encoding(response) is None:  # nothing to inflate, nothing to copy
                    await response.aread()
                    return response
                data = await read_body(response, what, self.inflate)
            except httpx.HTTPError as error:
                raise translate_httpx_error(error, what) from error
            finally:
                await response.aclose()
            return _with_content(response, data)

        return await retrying(self.retry, attempt)

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        ok: Collection[int] = (200,),
        retry: bool = True,
    ) -> AsyncIterator[httpx.Response]:
        """Open a streamed response; retries cover opening it, never its middle.

        Args:
            retry: False when the caller retries the whole unit itself (so the
                attempts do not multiply).
        """

        async def attempt() -> httpx.Response:
            response = await self._send(method, url, headers, None)
            if response.status_code not in ok:
                try:
                    await self._raise_status(response, method, url)
                finally:
                    await response.aclose()
            return response

        response = await retrying(self.retry if retry else None, attempt)
        try:
            yield response
        finally:
            await response.aclose()

    async def _send(
        self, method: str, url: str, headers: Mapping[str, str] | None, body: Any
    ) -> httpx.Response:
        if self.closed:
            raise ClientClosedError(f"{method} {redact_url(url)}: the client is closed")
        failure: DicomWebError | None = None
        try:
            response = None
            if self.direct is not None and method == "GET" and body is None:
                response = await self.direct.send(url, headers)
            if response is None:
                request = self.http.build_request(method, url, headers=headers, content=body)
                response = await self.http.send(request, stream=True)
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            failure = translate_httpx_error(error, f"{method} {redact_url(url)}")
            if not isinstance(error, httpx.LocalProtocolError):
                raise failure from error
        if failure is not None:
            raise failure  # outside the handler: no chain back to a refused header's value
        assert response is not None
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %s -> %d", method, redact_url(url), response.status_code)
        return response

    async def _raise_status(self, response: httpx.Response, method: str, url: str) -> None:
        body = await _read_some(response, _ERROR_BODY_LIMIT)
        shown = redact_url(url)
        text = excerpt(body.decode("utf-8", "replace"))
        reason = response.reason_phrase or _standard_phrase(response.status_code)
        message = f"{method} {shown} failed: {response.status_code} {reason}"
        raise DicomWebHTTPError(
            f"{message}: {text}" if text else message,
            status=response.status_code,
            method=method,
            url=shown,
            body_excerpt=text,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )


def _standard_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


async def _read_some(response: httpx.Response, limit: int) -> bytes:
    """At most `limit` bytes of an error body: a hostile server cannot make us buffer more."""
    try:
        return await read_body(response, "error body", most=limit)
    except (httpx.HTTPError, DicomWebError):
        return b""  # the status is the error; a broken error body adds nothing


def _with_content(response: httpx.Response, content: bytes) -> httpx.Response:
    """`response` with its body read and inflated: no Content-Encoding left to undo."""
    headers = [(k, v) for k, v in response.headers.raw if k.lower() != b"content-encoding"]
    read = httpx.Response(
        response.status_code, headers=headers, content=content, extensions=response.extensions
    )
    with suppress(RuntimeError):  # a GET sent past httpx's client has no request object
        read.request = response.request
    return read
