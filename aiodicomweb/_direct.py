"""GETs handed straight to the fast path, past httpx's client machinery.

Half of a warm QIDO call's cost is `httpx.AsyncClient` building and sending the
request (figures in benchmarks/README.md). For the requests where none of that
machinery has anything to do, this module sends exactly what httpx would send
to `WireTransport.get`. They are the requests that meet all of these conditions:

- a GET without a body, to the client's own http or https origin, with no proxy;
- a path and query made only of characters httpx sends unchanged, and no dot
  segments (httpx would normalise those);
- no event hooks, and no cookies in the jar;
- no auth, basic auth, or a `BearerTokenAuth` that already holds a token.

An answer goes back to httpx whenever httpx has work to do with it. A redirect
is followed by httpx, and this client stops going direct. A 401 under a bearer
token with a refresh callback gets a new token and one more attempt, as httpx's
auth flow would do. `Set-Cookie`
headers are stored in the client's jar. httpx's own INFO line per request is
not written for these; aiodicomweb's DEBUG line is. The tests compare the
request target and headers with what httpx sends for the same call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import httpx

from aiodicomweb._auth import BearerTokenAuth
from aiodicomweb._wire import DEFAULT_PORTS, WireTransport

__all__ = ["DirectGets"]

# Characters httpx leaves as they are in both a path and a query (checked
# against httpx.URL in the tests), and %XX escapes.
_UNCHANGED = re.compile(r"/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?^]|%[0-9A-Fa-f]{2})*")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class DirectGets:
    """Sends eligible GETs of one client to its `WireTransport` directly.

    Args:
        http: The client's httpx client: its headers, timeouts, hooks and
            cookies are read at each request.
        wire: The fast path, which the httpx client itself uses for GETs.
        base_url: The client's base URL, as it writes its request URLs.
        auth: The client's auth, as given to httpx.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        wire: WireTransport,
        base_url: str,
        auth: httpx.Auth | None,
    ) -> None:
        self.http = http
        self.wire = wire
        url = httpx.URL(base_url)
        authority = base_url.split("/", 3)[2]  # the client checked scheme and host
        self.prefix = f"{url.scheme}://{authority}"
        self.origin = (url.scheme, url.host, url.port or DEFAULT_PORTS.get(url.scheme, 0))
        self.host_header = url.netloc
        self.auth = auth
        self.basic: bytes | None = None
        if type(auth) is httpx.BasicAuth:
            flow = auth.sync_auth_flow(httpx.Request("GET", url))
            self.basic = next(flow).headers["Authorization"].encode("ascii")
        self.enabled = (
            url.scheme in DEFAULT_PORTS
            and base_url.startswith(self.prefix)
            and "@" not in authority
            and (auth is None or type(auth) in (httpx.BasicAuth, BearerTokenAuth))
            # the origin goes through no proxy (httpx's own choice of transport)
            and http._transport_for_url(url) is wire
        )

    def target(self, url: str) -> bytes | None:
        """The request target httpx would send for `url`, or None if not sure."""
        if not url.startswith(self.prefix):
            return None
        rest = url[len(self.prefix) :]
        if not _UNCHANGED.fullmatch(rest):
            return None
        path = rest.partition("?")[0]
        if "." in path and any(segment in (".", "..") for segment in path.split("/")):
            return None
        return rest.encode("ascii")

    def headers(self, extra: Mapping[str, str] | None) -> list[tuple[bytes, bytes]] | None:
        """The request headers httpx would send, or None if httpx must build them."""
        lines = []
        replaced = {name.lower() for name in extra} if extra else set()
        if self.auth is not None:
            replaced.add("authorization")
        for raw_name, raw_value in self.http.headers.raw:
            if raw_name.decode("latin-1").lower() not in replaced:
                lines.append((raw_name, raw_value))
        try:
            for name, value in (extra or {}).items():
                lines.append((name.encode("ascii"), value.encode("ascii")))
        except UnicodeEncodeError:
            return None
        if not any(name.lower() == b"host" for name, _ in lines):
            lines.insert(0, (b"Host", self.host_header))  # as httpx: unless one was given
        if self.basic is not None:
            lines.append((b"Authorization", self.basic))
        elif isinstance(self.auth, BearerTokenAuth):
            token = self.auth.authorization()
            if token is None:
                return None  # httpx's auth flow fetches the first token
            lines.append((b"Authorization", token.encode("ascii")))
        return lines

    async def send(self, url: str, headers: Mapping[str, str] | None) -> httpx.Response | None:
        """The response to a GET of `url`, or None when httpx must send it.

        Raises:
            httpx.HTTPError: the connection failed, as from any httpx transport.
        """
        hooks = self.http.event_hooks
        if not self.enabled or hooks["request"] or hooks["response"] or self.http.cookies.jar:
            return None
        target = self.target(url)
        lines = self.headers(headers) if target is not None else None
        if target is None or lines is None:
            return None
        timeouts = {"timeout": self.http.timeout.as_dict()}
        response = await self.wire.get(self.origin, target, lines, timeouts)
        status = response.status_code
        if status in _REDIRECTS and "location" in response.headers:
            await response.aclose()
            self.enabled = False  # a server that redirects: httpx follows, from now on
            return None
        auth = self.auth
        if status == 401 and isinstance(auth, BearerTokenAuth) and auth.refreshable:
            # As httpx's flow for this auth: one new token, one more attempt.
            await response.aclose()
            await auth.refresh_after(dict(lines).get(b"Authorization", b"").decode())
            lines = self.headers(headers) or lines
            response = await self.wire.get(self.origin, target, lines, timeouts)
        if "set-cookie" in response.headers or "set-cookie2" in response.headers:
            response.request = httpx.Request("GET", url, headers=lines)
            self.http.cookies.extract_cookies(response)
        return response
