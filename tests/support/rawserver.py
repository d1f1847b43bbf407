"""A scripted HTTP server on a real loopback socket, for faults only sockets show.

Each accepted connection reads one request head and then runs the script the
test gave for the request path: send bytes, stall, close, or reset (RST). Used
for read timeouts and connection resets, which a MockTransport cannot produce.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Script = Callable[[socket.socket], None]


def reset(sock: socket.socket) -> None:
    """Abort the connection with a TCP RST instead of a clean close."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _path(head: bytes) -> str:
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    return line.split(" ")[1] if " " in line else ""


@contextmanager
def raw_server(
    route: Callable[[str], Script],
    heads: list[bytes] | None = None,
    tls: ssl.SSLContext | None = None,
) -> Iterator[str]:
    """Serve on 127.0.0.1; yields the base URL. `route(path)` picks each connection's script.

    Each request head received is appended to `heads` when given. With `tls`, the
    scripts write to a TLS socket (and the URL is https).
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    workers: list[threading.Thread] = []

    def handle(sock: socket.socket) -> None:
        try:
            if tls is not None:
                sock = tls.wrap_socket(sock, server_side=True)
            head = _read_head(sock)
            if heads is not None:
                heads.append(head)
            route(_path(head))(sock)
        except OSError:
            pass  # the client went away: that is what some tests provoke
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def accept() -> None:
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            worker = threading.Thread(target=handle, args=(sock,), daemon=True)
            worker.start()
            workers.append(worker)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        scheme = "http" if tls is None else "https"
        yield f"{scheme}://127.0.0.1:{listener.getsockname()[1]}/dicom-web"
    finally:
        stop.set()
        thread.join()
        listener.close()
        for worker in workers:
            worker.join(timeout=5)
