"""Serve recorded answers at once, over keep-alive HTTP/1.1 on loopback.

`python _replay_server.py ANSWERS.json`: the file maps request targets (path and
query, as sent) to the hex of the body Orthanc gave for them. Prints the port,
then answers every GET of a known target with that body (Content-Length, no
delay), until killed. Used to measure what a client adds to a query without
the server's own variance; 404 for anything else.
"""

from __future__ import annotations

import json
import socket
import sys
import threading


def serve(connection: socket.socket, answers: dict[bytes, bytes]) -> None:
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pending = b""
    with connection:
        while True:
            while b"\r\n\r\n" not in pending:
                data = connection.recv(65536)
                if not data:
                    return
                pending += data
            head, _, pending = pending.partition(b"\r\n\r\n")
            target = head.split(b" ", 2)[1]
            body = answers.get(target)
            status = b"200 OK" if body is not None else b"404 Not Found"
            body = body if body is not None else b""
            connection.sendall(
                b"HTTP/1.1 %s\r\nContent-Type: application/dicom+json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (status, len(body), body)
            )


def main() -> None:
    with open(sys.argv[1]) as file:
        answers = {k.encode(): bytes.fromhex(v) for k, v in json.load(file).items()}
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    while True:
        connection, _ = listener.accept()
        threading.Thread(target=serve, args=(connection, answers), daemon=True).start()


if __name__ == "__main__":
    main()
