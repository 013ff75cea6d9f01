"""A minimal HTTP/1.1 client on plain sockets, for the timed requests.

An HTTP library costs the client a millisecond or so per request; with 50 requests in
flight on this 2-core machine that client then takes a whole core from the server it
is timing (seen with perf). This one sends pre-built requests on keep-alive connections
opened beforehand and reads back only the status and the body.
"""

from __future__ import annotations

import json
import socket
from typing import Any


class RawHttp:
    """``connections`` keep-alive connections to ``127.0.0.1:port``.

    >>> with RawHttp(port, 50) as http:
    ...     statuses = http.many("POST", [f"/v1/process/{i}/stop" for i in ids])
    """

    def __init__(self, port: int, connections: int = 1) -> None:
        self.port = port
        self.socks: list[socket.socket] = []
        for _ in range(connections):
            sock = socket.create_connection(("127.0.0.1", port), timeout=60)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.socks.append(sock)
        self._buffers = [b""] * connections

    def __enter__(self) -> RawHttp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        self.socks = []

    @staticmethod
    def build(method: str, path: str, body: Any = None) -> bytes:
        payload = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(payload)}\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        return head.encode() + b"\r\n" + payload

    def _read(self, index: int) -> tuple[int, bytes]:
        sock = self.socks[index]
        data = self._buffers[index]
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            chunk = sock.recv(max(65536, length - len(rest)))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            rest += chunk
        self._buffers[index] = rest[length:]
        return status, rest[:length]

    def send(self, request: bytes) -> tuple[int, bytes]:
        """One request built by ``build`` on the first connection: (status, body)."""
        self.socks[0].sendall(request)
        return self._read(0)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        return self.send(self.build(method, path, body))

    def get_json(self, path: str) -> Any:
        status, body = self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
        return json.loads(body)

    def many(self, requests: list[bytes]) -> list[tuple[int, bytes]]:
        """Send each request on its own connection, all before reading any answer."""
        if len(requests) > len(self.socks):
            raise ValueError(f"{len(requests)} requests for {len(self.socks)} connections")
        for sock, request in zip(self.socks, requests, strict=False):
            sock.sendall(request)
        return [self._read(i) for i in range(len(requests))]
