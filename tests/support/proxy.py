"""A small recording HTTP forward proxy on loopback, for the proxy tests.

It understands the two things clients send a forward proxy: absolute-form requests
for plain-HTTP origins (`GET http://host:port/path HTTP/1.1`), which it forwards, and
`CONNECT host:port` for HTTPS origins, which it answers with a byte tunnel. Every
request line it receives is recorded, so tests can prove traffic went through it.

One thread accepts; each client connection gets its own thread. Each connection
carries one request: upstream is asked for `Connection: close`, the response is
relayed as received and the client connection is closed after it, which keeps
close-delimited and chunked bodies intact without re-framing them. Standard library
only; nothing here depends on aiodicomweb.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
import urllib.parse

# Hop-by-hop headers (RFC 9110, section 7.6.1) belong to one connection, not the message.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
    }
)
_MAX_HEAD = 64 * 1024
_CHUNK = 64 * 1024
# How long blocked threads may wait before they notice that the proxy is stopping.
_POLL = 0.1


class _ProtocolError(Exception):
    """The peer sent something this proxy does not understand."""


class _BadGatewayError(Exception):
    """The origin could not be reached or did not answer with an HTTP response."""


class _Reader:
    """Buffered reads from a socket, keeping what was read past a message head."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self) -> bool:
        data = self.sock.recv(_CHUNK)
        self.buffer += data
        return bool(data)

    def head(self) -> bytes | None:
        """Read up to and including the blank line; None on a clean EOF before any byte."""
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > _MAX_HEAD:
                raise _ProtocolError("message head too large")
            if not self._fill():
                if self.buffer:
                    raise _ProtocolError("connection closed inside a message head")
                return None
        head = bytes(self.buffer[: end + 4])
        del self.buffer[: end + 4]
        return head

    def line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if not self._fill():
                raise _ProtocolError("connection closed inside a chunked body")
        line = bytes(self.buffer[: end + 2])
        del self.buffer[: end + 2]
        return line

    def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise _ProtocolError("connection closed inside a body")
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def take(self) -> bytes:
        """Whatever was read ahead and not consumed yet."""
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


def _parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = head.decode("iso-8859-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise _ProtocolError(f"malformed header line {line!r}")
        headers.append((name.strip(), value.strip()))
    return lines[0], headers


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _end_to_end(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop hop-by-hop headers, including those the Connection header names."""
    named = {
        token.strip().lower()
        for key, value in headers
        if key.lower() == "connection"
        for token in value.split(",")
    }
    return [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP | named]


def _encode_head(start: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [start, *(f"{key}: {value}" for key, value in headers), "", ""]
    return "\r\n".join(lines).encode("iso-8859-1")


def _split_authority(authority: str, default_port: int) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit("//" + authority)
    try:
        port = parsed.port
    except ValueError as exc:  # a port that is not a number, or out of range
        raise _ProtocolError(f"bad port in {authority!r}") from exc
    if not parsed.hostname:
        raise _ProtocolError(f"no host in {authority!r}")
    return parsed.hostname, port or default_port


class ForwardProxy:
    """A recording forward proxy on 127.0.0.1; use as a context manager.

    Attributes:
        url: The proxy's address for clients, e.g. `http://127.0.0.1:PORT`.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_POLL)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._requests: list[str] = []
        self._sockets: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)

    @property
    def requests(self) -> list[str]:
        """A snapshot of the request lines received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def threads(self) -> list[threading.Thread]:
        """The threads still running (the acceptor and one per open connection)."""
        with self._lock:
            threads = [*self._threads, self._acceptor]
        return [thread for thread in threads if thread.is_alive()]

    def start(self) -> ForwardProxy:
        self._acceptor.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, cut open connections and tunnels, join every thread."""
        self._stopping.set()
        if self._acceptor.is_alive():
            self._acceptor.join(timeout)
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
            threads = list(self._threads)
        for sock in sockets:
            # shutdown() wakes a thread blocked in recv(); close() alone may not.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(timeout)
        if left := self.threads:
            raise RuntimeError(f"proxy threads did not stop: {left}")

    def __enter__(self) -> ForwardProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Connection bookkeeping -------------------------------------------------------

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)
        # A connection opened while stop() was cutting the others must not linger.
        if self._stopping.is_set():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        sock.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            with self._lock:
                # Finished threads are dropped here so a long session does not pile them up.
                self._threads = {t for t in self._threads if t.is_alive()}
                self._threads.add(thread)
            self._track(client)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            reader = _Reader(client)
            head = reader.head()
            if head is None:
                return
            request_line, headers = _parse_head(head)
            with self._lock:
                self._requests.append(request_line)
            method, _, rest = request_line.partition(" ")
            target, _, version = rest.partition(" ")
            if not version.startswith("HTTP/1."):
                raise _ProtocolError(f"not an HTTP/1.x request line: {request_line!r}")
            try:
                if method == "CONNECT":
                    upstream = self._open(*_split_authority(target, 443))
                else:
                    upstream, request = self._forward_head(method, target, version, headers)
            except OSError as exc:
                raise _BadGatewayError(f"cannot reach {target}: {exc}") from exc
            if method == "CONNECT":
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self._tunnel(client, upstream, reader.take())
            else:
                upstream.sendall(request)
                self._exchange(reader, client, upstream, headers)
        except _ProtocolError as exc:
            with contextlib.suppress(OSError):
                client.sendall(_error(400, str(exc)))
        except _BadGatewayError as exc:
            with contextlib.suppress(OSError):
                client.sendall(_error(502, str(exc)))
        except OSError:
            pass  # a peer went away, or stop() cut the connection
        finally:
            if upstream is not None:
                self._forget(upstream)
            self._forget(client)

    def _open(self, host: str, port: int) -> socket.socket:
        sock = socket.create_connection((host, port), timeout=10)
        sock.settimeout(None)
        self._track(sock)
        return sock

    # Plain-HTTP forwarding ----------------------------------------------------------

    def _forward_head(
        self, method: str, target: str, version: str, headers: list[tuple[str, str]]
    ) -> tuple[socket.socket, bytes]:
        """Connect to the origin the absolute-form target names; build the request head."""
        url = urllib.parse.urlsplit(target)
        if url.scheme != "http" or not url.netloc:
            raise _ProtocolError(f"expected an absolute http:// target, got {target!r}")
        host, port = _split_authority(url.netloc, 80)
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        forwarded = _end_to_end(headers)
        if _header(forwarded, "host") is None:
            forwarded.insert(0, ("Host", url.netloc))
        forwarded.append(("Connection", "close"))
        return self._open(host, port), _encode_head(f"{method} {path} {version}", forwarded)

    def _exchange(
        self,
        reader: _Reader,
        client: socket.socket,
        upstream: socket.socket,
        headers: list[tuple[str, str]],
    ) -> None:
        """Send the request body while relaying the response, as `Expect: 100-continue` needs."""
        body = threading.Thread(
            target=self._send_body, args=(reader, upstream, headers), daemon=True
        )
        body.start()
        try:
            self._relay_response(_Reader(upstream), client)
        except _BadGatewayError as exc:
            # Answered here, before the client's side is shut below.
            with contextlib.suppress(OSError):
                client.sendall(_error(502, str(exc)))
        finally:
            # The origin may answer before reading the whole body (say, a 413): cutting
            # the upstream side makes the body sender fail fast instead of outliving us.
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_WR)
            body.join()
        _drain(client)

    @staticmethod
    def _send_body(
        reader: _Reader, upstream: socket.socket, headers: list[tuple[str, str]]
    ) -> None:
        try:
            if (_header(headers, "transfer-encoding") or "").lower().endswith("chunked"):
                # Relayed with its framing, reading just far enough to find its end.
                while True:
                    size_line = reader.line()
                    upstream.sendall(size_line)
                    size = int(size_line.split(b";")[0].strip(), 16)
                    if size == 0:
                        while (trailer := reader.line()) != b"\r\n":
                            upstream.sendall(trailer)
                        upstream.sendall(trailer)
                        return
                    upstream.sendall(reader.exactly(size + 2))
            remaining = int(_header(headers, "content-length") or 0)
            while remaining > 0:
                data = reader.exactly(min(remaining, _CHUNK))
                upstream.sendall(data)
                remaining -= len(data)
        except (OSError, ValueError, _ProtocolError):
            pass  # the response side reports what went wrong, or already finished

    @staticmethod
    def _relay_response(upstream: _Reader, client: socket.socket) -> None:
        sent = False
        while True:
            try:
                head = upstream.head()
                if head is None:
                    raise _ProtocolError("closed the connection without answering")
                status_line, headers = _parse_head(head)
            except _ProtocolError as exc:
                if not sent:
                    raise _BadGatewayError(f"bad answer from the origin: {exc}") from exc
                # Too late for an error response: cutting the connection is all that is left.
                raise ConnectionAbortedError(str(exc)) from exc
            interim = status_line.split(" ")[1:2] in (["100"], ["102"], ["103"])
            headers = _end_to_end(headers)
            if not interim:
                # This connection ends with the response; tell the client so.
                headers.append(("Connection", "close"))
            client.sendall(_encode_head(status_line, headers))
            sent = True
            if not interim:
                break
        # Whatever framing the body has, it ends where the origin's connection does.
        if data := upstream.take():
            client.sendall(data)
        while data := upstream.sock.recv(_CHUNK):
            client.sendall(data)

    # CONNECT tunnels ---------------------------------------------------------------

    def _tunnel(self, client: socket.socket, upstream: socket.socket, early: bytes) -> None:
        """Relay bytes both ways, passing half-closes on, until both sides have closed."""
        if early:
            upstream.sendall(early)
        peers = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as selector:
            for sock in peers:
                selector.register(sock, selectors.EVENT_READ, sock)
            open_readers = len(peers)
            while open_readers and not self._stopping.is_set():
                for key, _events in selector.select(_POLL):
                    source: socket.socket = key.data
                    data = source.recv(_CHUNK)
                    if data:
                        peers[source].sendall(data)
                        continue
                    selector.unregister(source)
                    open_readers -= 1
                    with contextlib.suppress(OSError):
                        peers[source].shutdown(socket.SHUT_WR)


def _drain(sock: socket.socket, budget: float = 0.5) -> None:
    """Read what the client still sends, briefly, before the caller closes the socket.

    Closing a socket with unread input makes the kernel send a reset, which can destroy
    the end of the response before the client has read it.
    """
    deadline = time.monotonic() + budget
    with contextlib.suppress(OSError):
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(_CHUNK):
                return


def _error(status: int, message: str) -> bytes:
    reason = {400: "Bad Request", 502: "Bad Gateway"}[status]
    body = (message + "\n").encode("utf-8", "replace")
    head = _encode_head(
        f"HTTP/1.1 {status} {reason}",
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ],
    )
    return head + body
