"""The fast path for GETs: large reads, llhttp framing, TLS on memory buffers.

An httpx transport. GETs to http and https origins that go through no proxy
are sent here; every other request goes to `inner`, httpx's own transport.
httpx still does everything above the wire (auth flows, cookies, redirects,
timeout settings), except for the GETs `_direct` hands to `get` itself.

What makes it fast (figures in benchmarks/README.md): reads of up to 1 MiB into
one reused buffer; over TLS, ciphertext read from the non-blocking socket in
large pieces and as many records decrypted as are ready before anything is
parsed; responses parsed by llhttp (httptools), which hands each body piece out
with one copy; small answers read whole; a keep-alive pool. What keeps it
honest: llhttp frames every response (status line, headers, Content-Length,
chunked, 1xx), as strictly as h11 refuses malformed ones; request heads are
checked against h11's grammar before they are written.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import re
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.lowlevel
import httptools
import httpx

from aiodicomweb._rate import MinRate, RateWatch

__all__ = ["DEFAULT_PORTS", "READ_SIZE", "WireTransport"]

READ_SIZE = 1 << 20
RAW_READ = 256 * 1024  # TLS: ciphertext per socket read, decrypted into the READ_SIZE buffer
MAX_HEAD = 64 * 1024
MAX_INFORMATIONAL = 16  # 1xx heads before the answer: an endless stream of them is refused
# Bodies up to this size are read whole before the response is returned (QIDO
# answers, small metadata); larger ones stream, so per-instance downloads stay small.
SMALL_BODY = 64 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443}  # the schemes the fast path speaks
# As h11 accepts them: a field name (token), a field value, a request target.
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_EARLY_CLOSE = "peer closed connection before the end of the body"

Origin = tuple[str, str, int]  # scheme, host, port


class WireTransport(httpx.AsyncBaseTransport):
    """GETs to http(s) origins on the fast path; everything else to `inner`.

    Args:
        inner: httpx's transport, for every other request.
        tls_context: Gives the client's `SSLContext` (called at the first https
            connection).
        max_connections: Upper bound of open connections, as httpx's pool has.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        tls_context: Callable[[], ssl.SSLContext],
        max_connections: int = 8,
        min_rate: MinRate | None = None,
    ) -> None:
        self.inner = inner
        self.tls_context = tls_context
        self.max_connections = max_connections
        self.min_rate = min_rate
        self._idle: dict[Origin, list[_Connection]] = {}
        self._slots: anyio.Semaphore | None = None  # made in the event loop, on first use

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if request.method != "GET" or url.scheme not in DEFAULT_PORTS:
            return await self.inner.handle_async_request(request)
        origin = (url.scheme, url.host, url.port or DEFAULT_PORTS[url.scheme])
        return await self.get(origin, url.raw_path, request.headers.raw, request.extensions)

    async def get(
        self,
        origin: Origin,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        extensions: dict[str, Any],
    ) -> httpx.Response:
        """GET `target` from `origin` with exactly `headers` (Host included).

        The entry point for requests that did not go through httpx's client (see
        `DirectGets` in `_direct`); httpx exceptions, as from any transport.
        """
        head = _request_head(target, headers)
        timeouts = extensions.get("timeout", {})
        slots = await self._slot(timeouts.get("pool"))
        try:
            connection = self._checkout(origin)
            if connection is not None:
                connection.use_timeouts(timeouts)  # this request's, not the opener's
                try:
                    return await self._exchange(connection, head, origin, slots)
                except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
                    pass  # the server closed an idle connection: once more, on a fresh one
            connection = await _Connection.open(origin, timeouts, self.tls_context)
            return await self._exchange(connection, head, origin, slots)
        except BaseException:
            slots.release()
            raise

    async def _slot(self, pool_timeout: float | None) -> anyio.Semaphore:
        """Wait for one of `max_connections` connections, as httpx's pool would."""
        if self._slots is None:
            self._slots = anyio.Semaphore(self.max_connections)
        try:
            self._slots.acquire_nowait()  # the common case: no cancel scope, no wait
        except anyio.WouldBlock:
            try:
                with anyio.fail_after(pool_timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("no connection free within the pool timeout") from None
        return self._slots

    async def _exchange(
        self, connection: _Connection, head: bytes, origin: Origin, slots: anyio.Semaphore
    ) -> httpx.Response:

        def done(reusable: bool) -> None:
            if reusable:
                self._checkin(origin, connection)
            else:
                connection.close()
            slots.release()

        parser = _ResponseParser()
        connection.watch = RateWatch(self.min_rate)  # for this answer, head and body
        try:
            await connection.send_all(head)
            await _read_head(connection, parser)
            body = _Body(connection, parser, done)
            content = await body.read_small()
        except BaseException:
            parser.release()
            connection.close()  # the caller releases the slot
            raise
        extensions = {"http_version": b"HTTP/1.1", "reason_phrase": parser.reason}
        status, headers = parser.status, parser.headers
        if content is not None:  # a small answer, read whole: no stream to pass through
            return httpx.Response(status, headers=headers, content=content, extensions=extensions)
        return httpx.Response(status, headers=headers, stream=body, extensions=extensions)

    def _checkout(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin, [])
        while idle:
            connection = idle.pop()
            if connection.healthy():
                return connection
            connection.close()
        return None

    def _checkin(self, origin: Origin, connection: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) < self.max_connections:
            idle.append(connection)  # checked for a close from the server when taken again
        else:
            connection.close()

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
        await self.inner.aclose()


class _Connection:
    """One non-blocking socket, plain or TLS, read in large pieces into one buffer.

    TLS runs on memory buffers fed by large socket reads: OpenSSL reading the
    socket itself makes two system calls per record, and nginx sends 4 KiB
    records (benchmarks/README.md).
    """

    def __init__(
        self, sock: socket.socket, timeouts: dict[str, Any], tls: _Tls | None = None
    ) -> None:
        self.sock = sock
        self.tls = tls
        self.buffer = memoryview(bytearray(READ_SIZE))
        self.failure: OSError | None = None  # met after some bytes: raised at the next read
        self.watch = RateWatch(None)
        self.ended = False
        self.use_timeouts(timeouts)

    def use_timeouts(self, timeouts: dict[str, Any]) -> None:
        self.read_timeout = timeouts.get("read")
        self.write_timeout = timeouts.get("write")

    @classmethod
    async def open(
        cls, origin: Origin, timeouts: dict[str, Any], tls_context: Callable[[], ssl.SSLContext]
    ) -> _Connection:
        scheme, host, port = origin
        try:
            with anyio.fail_after(timeouts.get("connect")):
                sock = await _connect(host, port)
                tls = None
                if scheme == "https":
                    tls = await _Tls.start(sock, host, tls_context())
        except TimeoutError as error:
            raise httpx.ConnectTimeout(str(error) or "connect timed out") from None
        except OSError as error:  # ssl.SSLError included: certificate and handshake failures
            raise httpx.ConnectError(str(error) or type(error).__name__) from None
        return cls(sock, timeouts, tls)

    def close(self) -> None:
        self.sock.close()
        self.buffer = memoryview(b"")  # its megabyte goes now, whoever still holds us

    def healthy(self) -> bool:
        """An idle connection the server has not closed and sent nothing on."""
        if self.sock.fileno() < 0:
            return False
        try:
            waiting = self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            waiting = None
        except OSError:
            return False
        if self.tls is None or waiting == b"":
            return waiting is None  # a byte is a close, or data nobody asked for
        return self.tls.idle(self.sock)

    async def send_all(self, data: bytes) -> None:
        if self.tls is not None:
            data = self.tls.encrypt(data)
        await _send(self.sock, data, self.write_timeout)

    async def fill(self) -> int:
        """Read what the socket holds into `buffer`; the count, 0 at end of stream.

        A cancellation is honoured here even when the data is already there: a
        fast server must not carry a cancelled download through to its end.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        count = self._read_ready()  # already there: no cancel scope, no wait
        if count is None:
            try:
                with anyio.fail_after(self.read_timeout):
                    while (count := self._read_ready()) is None:
                        await anyio.wait_readable(self.sock)
            except TimeoutError:
                raise httpx.ReadTimeout("read timed out") from None
        self.watch.add(count)
        return count

    def _read_ready(self) -> int | None:
        """Bytes read without waiting (0 at end of stream), or None when none are ready."""
        if self.failure is not None:
            raise httpx.ReadError(str(self.failure) or type(self.failure).__name__)
        if self.ended:
            return 0
        if self.tls is not None:
            return self._read_tls(self.tls)
        try:
            return self.sock.recv_into(self.buffer)
        except BlockingIOError:
            return None
        except OSError as error:
            return self._failed(0, error)

    def _read_tls(self, tls: _Tls) -> int | None:
        """Records decrypted until the socket would block or the buffer is full.

        Each decryption gives one record (16 KiB at most, often 4 KiB).
        """
        total = 0
        buffer = self.buffer
        read = tls.read
        try:
            while total < READ_SIZE:
                try:
                    count = read(READ_SIZE - total, buffer[total:])
                except ssl.SSLWantReadError:
                    if tls.receive(self.sock):
                        continue
                    break  # the socket would block
                if not count:
                    self.ended = True  # close_notify: the end of the stream
                    break
                total += count
        except ssl.SSLEOFError as error:
            if not _closed_without_notify(error):
                return self._failed(total, ConnectionResetError("connection reset by peer"))
            self.ended = True  # TLS would call any later read a protocol violation
        except OSError as error:  # ssl.SSLError included: an alert, a bad record
            return self._failed(total, error)
        return total if total or self.ended else None

    def _failed(self, total: int, error: OSError) -> int:
        """Raise `error`, or keep it for the next read when some bytes came first."""
        if not total:
            raise httpx.ReadError(str(error) or type(error).__name__)
        self.failure = error  # a reset must not read as the end of the body later
        return total


async def _connect(host: str, port: int) -> socket.socket:
    infos = _literal_address(host, port) or await anyio.getaddrinfo(
        host, port, type=socket.SOCK_STREAM
    )
    last: OSError = OSError(f"cannot resolve {host}")
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            if error := sock.connect_ex(address):
                if error not in (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK):
                    raise OSError(error, f"connect to {host}:{port} failed")
                await anyio.wait_writable(sock)
                if error := sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    raise OSError(error, f"connect to {host}:{port} failed")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as error:
            sock.close()
            last = error
        except BaseException:  # timed out or cancelled while connecting
            sock.close()
            raise
    raise last


def _closed_without_notify(error: ssl.SSLEOFError) -> bool:
    """A TLS peer that closed its socket without close_notify (as httpx, taken as an end).

    OpenSSL 3 names that case; the same error without a reason is a reset, which
    must not pass for the end of a body that only the close delimits.
    """
    return error.reason == "UNEXPECTED_EOF_WHILE_READING" or ssl.OPENSSL_VERSION_INFO < (3,)


def _literal_address(host: str, port: int) -> list[Any]:
    """An IP address needs no resolver (which runs in a worker thread)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return []
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    where = (host, port) if family == socket.AF_INET else (host, port, 0, 0)
    return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", where)]


async def _send(sock: socket.socket, data: bytes, write_timeout: float | None) -> None:
    """Write all of `data` to the non-blocking socket."""
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
            continue
        except BlockingIOError:
            pass
        except OSError as error:
            raise httpx.WriteError(str(error) or type(error).__name__) from None
        try:
            with anyio.fail_after(write_timeout):
                await anyio.wait_writable(sock)
        except TimeoutError:
            raise httpx.WriteTimeout("write timed out") from None


class _Tls:
    """TLS on memory buffers, which the connection fills with large socket reads."""

    def __init__(
        self, tls_object: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO
    ) -> None:
        self.object = tls_object
        # The C object's own read: `SSLObject.read` adds a Python call to each record.
        c_object: Any = getattr(tls_object, "_sslobj", tls_object)
        self.read: Callable[[int, memoryview], int] = c_object.read
        self.incoming = incoming
        self.outgoing = outgoing
        self.raw = memoryview(bytearray(RAW_READ))
        self.unsent = b""

    @classmethod
    async def start(cls, sock: socket.socket, host: str, context: ssl.SSLContext) -> _Tls:
        """The handshake (SNI and hostname check by `context`); closes `sock` on failure."""
        try:
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = cls(
                context.wrap_bio(incoming, outgoing, server_hostname=host), incoming, outgoing
            )
            while True:
                try:
                    tls.object.do_handshake()
                    finished = True
                except ssl.SSLWantReadError:
                    finished = False
                await _send(sock, tls.encrypt(b""), None)  # the connect timeout covers it
                if finished:
                    return tls
                await anyio.wait_readable(sock)
                tls.receive(sock)
        except BaseException:
            sock.close()
            raise

    def encrypt(self, data: bytes) -> bytes:
        """`data` as records to send, after any TLS message still unsent."""
        if data:
            self.object.write(data)
        pending, self.unsent = self.unsent + self.outgoing.read(), b""
        return pending

    def receive(self, sock: socket.socket) -> bool:
        """Move what the socket holds to the TLS object; False if it would block.

        First sends what the TLS object wrote while reading (a key update, an answer
        to a renegotiation), which the server may be waiting for.
        """
        if self.outgoing.pending or self.unsent:
            self.unsent = self.encrypt(b"")
            with contextlib.suppress(OSError):  # a broken socket shows at the read below
                self.unsent = self.unsent[sock.send(self.unsent) :]
        try:
            count = sock.recv_into(self.raw)
        except BlockingIOError:
            return False
        if count:
            self.incoming.write(self.raw[:count])
        else:
            self.incoming.write_eof()  # the TLS object tells a close_notify from a cut
        return True

    def idle(self, sock: socket.socket) -> bool:
        """Only records without application data (TLS 1.3 tickets) came while idle."""
        probe = bytearray(1)
        try:
            while True:
                try:
                    self.object.read(1, probe)
                    return False  # data nobody asked for, or close_notify
                except ssl.SSLWantReadError:
                    if not self.receive(sock):
                        return True
        except (OSError, ValueError):
            return False  # closed, reset or alerted


def _request_head(target: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The GET request head; names, values and target checked against h11's grammar.

    A bodiless GET has no framing to get wrong, only fields to forge: anything
    outside the grammar (a line break, a NUL, a space in a name) is refused.
    h11 would write the same bytes, several times slower (benchmarks/README.md).
    """
    if not _TARGET.fullmatch(target):
        raise httpx.LocalProtocolError(f"invalid request target {target[:40]!r}")
    lines = [b"GET " + target + b" HTTP/1.1"]
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            raise httpx.LocalProtocolError(f"invalid header {name[:40]!r}")
        if name.lower() not in (b"connection", b"keep-alive"):
            lines.append(name + b": " + value.strip(b" \t"))
    lines.append(b"Connection: keep-alive\r\n\r\n")
    return b"\r\n".join(lines)


class _ResponseParser:
    """One response as llhttp (httptools) reads it: head, body pieces, completion.

    The callbacks below are llhttp's; the parser is strict except where h11 is
    lenient: obs-fold (a header continued on the next line) is joined, every
    header value then checked against h11's grammar, and a Content-Length sent
    with `Transfer-Encoding: chunked` gives way to the chunks.
    """

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        # Also as h11: Transfer-Encoding overrides a Content-Length sent with it (below).
        self.parser.set_dangerous_leniencies(lenient_headers=True, lenient_chunked_length=True)
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.trailing = False  # bytes came after the response: the connection is spent
        self.pieces: list[bytes] = []
        self.informational = 0
        self.fed = 0
        self.head_size = 0  # of the heads so far, 1xx ones included
        self.framed = True  # the body's end is told by its length or its chunks
        self._keep_alive = False

    def feed(self, data: memoryview) -> None:
        """Parse `data`, raising `httpx.RemoteProtocolError` for a malformed response."""
        self.fed += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise httpx.RemoteProtocolError("unexpected protocol switch") from None
        except httptools.HttpParserError as error:
            if self.complete:
                self.trailing = True  # garbage after a whole response: not our answer's
                return
            cause = error.__context__
            if isinstance(cause, httpx.RemoteProtocolError):
                raise cause from None
            raise httpx.RemoteProtocolError(f"malformed response: {error}") from None
        if not self.head_done and self.fed > MAX_HEAD:
            raise httpx.RemoteProtocolError("response head too large")

    def end_of_stream(self) -> None:
        """The server closed: the end of a body without framing, else an error."""
        if not self.head_done:
            raise httpx.RemoteProtocolError("server closed the connection before answering")
        if not self.complete:
            if self.framed:
                raise httpx.RemoteProtocolError(_EARLY_CLOSE)
            self.complete = True

    def release(self) -> None:
        """Break the cycle with llhttp's parser, which holds our callbacks.

        Otherwise every response's body pieces would wait for the cyclic garbage
        collector: per-instance downloads grew by half a megabyte per instance.
        """
        self.parser = None  # type: ignore[assignment]
        self.pieces = []

    def header(self, name: bytes) -> bytes | None:
        """The first value of the header `name` (lower case), if any."""
        return next((v for n, v in self.headers if n.lower() == name), None)

    def reusable(self) -> bool:
        return self.complete and self.framed and not self.trailing and self._keep_alive

    # -- llhttp callbacks --------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            self.trailing = True  # another response after ours: nobody asked for it
        elif self.informational:
            self.reason, self.headers = b"", []  # the final head after 1xx ones

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:
            return  # a trailer after a chunked body: not needed
        self.head_size += len(name) + len(value) + 4
        if self.head_size > MAX_HEAD:
            raise httpx.RemoteProtocolError("response head too large")
        if not _FIELD_VALUE.fullmatch(value):
            raise httpx.RemoteProtocolError(f"invalid value in response header {name[:40]!r}")
        self.headers.append((name, value.strip(b" \t")))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self.informational += 1
            if self.informational > MAX_INFORMATIONAL:
                raise httpx.RemoteProtocolError("too many informational (1xx) responses")
            return
        self.status = status
        self.head_done = True
        self._keep_alive = self.parser.should_keep_alive()
        coding = b",".join(v for n, v in self.headers if n.lower() == b"transfer-encoding")
        if coding and coding.strip(b" \t").lower() != b"chunked":
            # As h11: chunked is the only transfer coding; stacked or unknown ones are refused.
            raise httpx.RemoteProtocolError(f"unsupported Transfer-Encoding {coding[:40]!r}")
        has_length = self.header(b"content-length") is not None
        if coding and has_length:
            self._keep_alive = False  # read by its chunks, as h11 does; never reused (smuggling)
        self.framed = bool(coding) or has_length or status in (204, 304)

    def on_body(self, piece: bytes) -> None:
        if not self.complete:
            self.pieces.append(piece)

    def on_message_complete(self) -> None:
        if self.head_done and not self.complete:
            self.complete = True


async def _receive(connection: _Connection, parser: _ResponseParser) -> None:
    """Hand the next bytes from the server to the parser, or tell it the stream ended."""
    count = await connection.fill()
    if count:
        parser.feed(connection.buffer[:count])
    else:
        parser.end_of_stream()


async def _read_head(connection: _Connection, parser: _ResponseParser) -> None:
    """Read until the final (non-1xx) response head has been parsed."""
    while not parser.head_done:
        await _receive(connection, parser)


class _Body(httpx.AsyncByteStream):
    """The response body, as llhttp hands it out piece by piece."""

    def __init__(
        self, connection: _Connection, parser: _ResponseParser, done: Callable[[bool], None]
    ) -> None:
        self.connection = connection
        self.parser = parser
        self.done = done  # called once: True when the connection can serve again
        self.finished = False
        encoding = (parser.header(b"content-encoding") or b"").lower()
        self.encoded = encoding not in (b"identity", b"")

    async def read_small(self) -> bytes | None:
        """The whole body when it is small and not encoded, else None (a stream).

        Such a body (a QIDO answer, metadata, a frame) is read here at once and
        the connection released, which spares it the streaming machinery. A larger
        one stays a stream even when it has all arrived, so that its bytes are
        freed as they are consumed (a response may outlive its reading). An
        encoded body is inflated in bounded pieces (`_parts`), never all at once.
        """
        parser = self.parser
        if self.encoded or not (parser.complete or self._announced_small()):
            return None
        while not parser.complete:
            await _receive(self.connection, parser)
            if parser.fed > MAX_HEAD + SMALL_BODY:  # a chunked answer larger than announced
                return None
        if sum(map(len, parser.pieces)) > SMALL_BODY:
            return None
        content = b"".join(parser.pieces)
        parser.pieces = []
        self._finish(parser.reusable())
        return content

    def _announced_small(self) -> bool:
        length = self.parser.header(b"content-length")
        return length is not None and int(length) <= SMALL_BODY  # llhttp checked the digits

    async def __aiter__(self) -> AsyncIterator[bytes]:
        parser = self.parser
        while True:
            if parser.pieces:
                pieces, parser.pieces = parser.pieces, []
                yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
            if parser.complete:
                break
            await _receive(self.connection, parser)
        self._finish(parser.reusable())

    def _finish(self, reusable: bool) -> None:
        if not self.finished:
            self.finished = True
            self.parser.release()
            self.done(reusable)

    async def aclose(self) -> None:
        self._finish(False)  # not read to the end: the connection's state is unknown
