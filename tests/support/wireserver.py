"""A threaded HTTP/1.1 server on a real loopback socket that serves MockTransport handlers.

The error, retry and fault tables describe a server as a handler, `handler(request)
-> response`, the seam `httpx.MockTransport` offers. `WireServer` runs the same
handlers behind a real socket, so that the same tables also run over the client's
production paths (its lean plain-http wire, https, httpx's own transport).

Requests are parsed, and responses framed, by h11 (httpx's own HTTP/1.1 parser).
A response keeps its status, reason, headers and body bytes exactly as the handler
built them: in-memory content (`content=`, `json=`, `httpx.ByteStream`) goes out
with a Content-Length, a streamed body (an `httpx.AsyncByteStream` or
`SyncByteStream`) is sent chunked as it is produced. Connections are kept alive.

Faults map onto what a socket can show:

- a handler raising `httpx.RemoteProtocolError` (the server hung up): the
  connection is closed without an answer;
- a handler raising any other exception (a reset, a refused connection, a
  timeout...): the connection is reset (TCP RST) without an answer;
- a streamed body raising mid-way: what it produced so far is sent, then the
  connection is reset.

Handler calls are serialized, as they are on a MockTransport, so scripted
handlers that count their calls stay deterministic under concurrent requests.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable, Generator
from contextlib import closing
from types import TracebackType

import h11
import httpx

from tests.support.rawserver import reset

__all__ = ["Handler", "WireServer"]

Handler = Callable[[httpx.Request], httpx.Response]

RECV_SIZE = 64 * 1024
# The kernel's send buffer of each connection. Small, so that what a streamed body
# has produced tracks what the client has read: with a fast sender, autotuning grows
# the buffers of both ends to megabytes that no client asked for (measured: a 10 MiB
# error body pulled 1-4 MiB for a 1 KiB excerpt; 0.1-0.5 MiB with this setting).
SEND_BUFFER = 16 * 1024
# Statuses whose answers never have a body (RFC 9110 6.4.1), so no Content-Length either.
_NO_BODY = frozenset({204, 304})
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})


class WireServer:
    """Serves `handler` on 127.0.0.1, over TLS when `tls` is a server-side SSLContext.

    Use it as a context manager: it yields its base URL
    (`http://127.0.0.1:PORT/dicom-web`, or `https://...`), and on exit stops
    accepting, shuts down open connections and joins its threads.

    Args:
        handler: Builds the answer to each request, or raises to fault the connection.
        tls: The server-side TLS context; None serves plain http.
    """

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.scheme = "https" if tls is not None else "http"
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._address = self._listener.getsockname()
        self._stopping = threading.Event()
        self._handler_lock = threading.Lock()
        self._lock = threading.Lock()  # guards the two collections below
        self._connections: set[socket.socket] = set()
        self._workers: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name="wire-accept", daemon=True)

    @property
    def url(self) -> str:
        """The base URL the tables' DICOMweb paths hang off."""
        host, port = self._address
        return f"{self.scheme}://{host}:{port}/dicom-web"

    def __enter__(self) -> str:
        self._acceptor.start()
        return self.url

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stopping.set()
        # accept() does not return when the listener closes under it; a connection does.
        socket.create_connection(self._address).close()
        self._acceptor.join()
        self._listener.close()
        with self._lock:
            for sock in self._connections:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes a worker blocked in recv
                except OSError:
                    pass
            workers = list(self._workers)
        for worker in workers:
            worker.join(timeout=5)

    # -- connections ----------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            sock, _ = self._listener.accept()
            if self._stopping.is_set():
                sock.close()
                return
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            # As web servers do: a head, a body and a chunk trailer written apart must
            # not wait for the client's delayed ACKs (Nagle: 40 ms each on Linux).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            worker = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            with self._lock:
                self._connections.add(sock)
                self._workers.append(worker)
            worker.start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            if self.tls is not None:
                sock = self._secure(sock)
                sock.do_handshake()
            connection = h11.Connection(h11.SERVER)
            while (request := self._read_request(connection, sock)) is not None:
                if not self._answer(connection, sock, request):
                    return
                if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                    return  # h11 says this connection cannot carry another request
                connection.start_next_cycle()
        except (OSError, h11.ProtocolError):
            pass  # the client went away or spoke garbage: some tests provoke exactly that
        finally:
            with self._lock:
                self._connections.discard(sock)
            sock.close()

    def _secure(self, raw: socket.socket) -> ssl.SSLSocket:
        """`raw` wrapped in TLS, before the handshake; `__exit__` now shuts down this one."""
        assert self.tls is not None
        secure = self.tls.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        with self._lock:
            self._connections.discard(raw)  # detached by the wrapping
            self._connections.add(secure)
        return secure

    def _read_request(
        self, connection: h11.Connection, sock: socket.socket
    ) -> httpx.Request | None:
        """The next whole request (head and body) on `connection`; None once it closes."""
        head: h11.Request | None = None
        body: list[bytes] = []
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(sock.recv(RECV_SIZE))
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                break
            else:
                return None  # ConnectionClosed: the client is done with this connection
        host = dict(head.headers).get(b"host", b"").decode("ascii")
        return httpx.Request(
            head.method.decode("ascii"),
            f"{self.scheme}://{host}{head.target.decode('ascii')}",
            headers=head.headers.raw_items(),
            content=b"".join(body),
        )

    # -- answers ----------------------------------------------------------------------

    def _answer(
        self, connection: h11.Connection, sock: socket.socket, request: httpx.Request
    ) -> bool:
        """Writes the handler's answer to `request`; False when the connection was faulted."""
        try:
            with self._handler_lock:
                response = self.handler(request)
        except httpx.RemoteProtocolError:
            return False  # "the server hung up": closed (FIN) without an answer
        except Exception:
            reset(sock)
            return False
        headers = list(response.headers.raw)
        framed = any(name.lower() in _FRAMING for name, _ in headers)
        stream = response.stream
        if isinstance(stream, httpx.ByteStream):
            # Measured on the raw bytes the handler gave, never `response.content`:
            # httpx has decoded that by its Content-Encoding already.
            length = sum(len(chunk) for chunk in stream)
            if not framed and response.status_code not in _NO_BODY:
                headers.append((b"Content-Length", str(length).encode("ascii")))
        elif not framed:
            headers.append((b"Transfer-Encoding", b"chunked"))
        reason = response.reason_phrase.encode("ascii")
        head = h11.Response(status_code=response.status_code, headers=headers, reason=reason)
        sock.sendall(connection.send(head) or b"")
        with closing(_chunks(stream)) as chunks:
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except Exception:
                    reset(sock)  # the body broke mid-way: the client keeps what came before
                    return False
                sock.sendall(connection.send(h11.Data(data=chunk)) or b"")
        sock.sendall(connection.send(h11.EndOfMessage()) or b"")
        return True


def _chunks(stream: httpx.SyncByteStream | httpx.AsyncByteStream) -> Generator[bytes, None, None]:
    """The chunks of a body, produced one by one as the socket takes them.

    An async body runs on a private event loop in the server thread: the test's own
    event loop (asyncio or trio) never runs server code.
    """
    if isinstance(stream, httpx.SyncByteStream):
        yield from stream
        return
    loop = asyncio.new_event_loop()
    iterator = stream.__aiter__()

    async def following() -> bytes | None:
        try:
            return await iterator.__anext__()
        except StopAsyncIteration:
            return None

    try:
        while (chunk := loop.run_until_complete(following())) is not None:
            yield chunk
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())  # a body the client left early
        loop.close()
