"""Authentication helpers on top of httpx.Auth."""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator

import anyio
import httpx

from aiodicomweb._exceptions import DicomWebUsageError
from aiodicomweb._validate import header_value

__all__ = ["BearerTokenAuth", "make_auth"]

TokenSource = Callable[[], "str | Awaitable[str]"]


class BearerTokenAuth(httpx.Auth):
    """`Authorization: Bearer <token>`, refreshed through a callback.

    The callback (plain or async) is called when there is no token yet, and again
    once when the server answers 401; the request is then retried once with the
    new token. The token never appears in a repr.

    Args:
        token: The current token, if known.
        refresh: Returns a fresh token; plain function or coroutine function.
    """

    def __init__(self, token: str | None = None, refresh: TokenSource | None = None) -> None:
        if token is None and refresh is None:
            raise DicomWebUsageError("BearerTokenAuth needs a token or a refresh callback")
        self._token = None if token is None else header_value("Authorization", token)
        self._refresh = refresh
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        shown = "'***'" if self._token else None
        return f"BearerTokenAuth(token={shown}, refresh={self._refresh is not None})"

    def authorization(self) -> str | None:
        """The `Authorization` value for the token held now; None before the first one."""
        return None if self._token is None else f"Bearer {self._token}"

    @property
    def refreshable(self) -> bool:
        """Whether a 401 leads to a new token and one more attempt."""
        return self._refresh is not None

    async def refresh_after(self, sent: str | None) -> None:
        """Get a new token after the server refused `sent` (an `authorization()` value)."""
        await self._fresh_token(sent.removeprefix("Bearer ") if sent else None)

    async def _fresh_token(self, stale: str | None) -> str:
        assert self._refresh is not None
        async with self._lock:
            # Another request may have refreshed while we waited for the lock.
            if self._token is not None and self._token != stale:
                return self._token
            token = self._refresh()
            if inspect.isawaitable(token):
                token = await token
            self._token = header_value("Authorization", str(token))
            return self._token

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = self._token if self._token is not None else await self._fresh_token(None)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401 and self._refresh is not None:
            await response.aread()
            token = await self._fresh_token(token)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("BearerTokenAuth is used through the async client only")


def make_auth(auth: httpx.Auth | tuple[str, str] | None) -> httpx.Auth | None:
    """Normalise the `auth` argument: (user, password) becomes basic auth."""
    if auth is None or isinstance(auth, httpx.Auth):
        return auth
    if isinstance(auth, tuple) and len(auth) == 2:
        return httpx.BasicAuth(auth[0], auth[1])
    raise TypeError("auth must be an httpx.Auth, a (user, password) tuple, or None")
