#!/usr/bin/env python3
"""A registry that stores nothing: the floor for the push benchmark.

Answers just enough of the distribution API for `skopeo copy` to push
(ping, blob HEAD 404, upload POST/PATCH/PUT, manifest PUT) and throws
every request body away unread beyond the socket: no hashing, no disk,
no fsync. A push against it costs only the client's own work, so a real
server's push time can be read against it.

    bench/null-registry.py PORT
"""
import socket
import sys
import threading


def serve(conn):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    pending = b""
    with conn:
        while True:
            while b"\r\n\r\n" not in pending:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                pending += chunk
                if pending[:1] == b"\x16":
                    # A TLS handshake: skopeo tries HTTPS first, then HTTP.
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                    return
            head, pending = pending.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method, target = lines[0].split(" ")[:2]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            left = length - len(pending)
            pending = pending[length:] if left <= 0 else b""
            while left > 0:
                n = conn.recv_into(view, min(left, len(buf)))
                if n == 0:
                    return
                left -= n
            path, _, query = target.partition("?")
            extra = ""
            if method == "GET":
                status = "200 OK"
            elif method == "HEAD":
                status = "404 Not Found"
            elif method in ("POST", "PATCH"):
                status = "202 Accepted"
                extra = f"Location: /v2/null/blobs/uploads/x\r\nRange: 0-{max(length, 1) - 1}\r\n"
            elif method == "PUT":
                status = "201 Created"
                digest = query.partition("digest=")[2].split("&")[0].replace("%3A", ":")
                if digest:
                    extra = f"Docker-Content-Digest: {digest}\r\n"
            else:
                status = "404 Not Found"
            conn.sendall(
                f"HTTP/1.1 {status}\r\n{extra}Docker-Distribution-Api-Version: registry/2.0\r\n"
                "Content-Length: 0\r\n\r\n".encode()
            )


def main():
    listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
