"""A small stdlib HTTP client for the serve tests: every response (4xx/5xx too) as
(status, headers, body), and raw-socket helpers for slow or partial requests."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any


def call(url: str, path: str, body: Any = None, *, method: str | None = None,
         accept: str | None = None, token: str | None = None, raw: bytes | None = None,
         timeout: float = 10.0) -> tuple[int, dict, bytes]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url + path, data=data, method=method or ("POST" if data is not None else "GET"))
    req.add_header("Content-Type", "application/json")
    if accept:
        req.add_header("Accept", accept)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def post_json(url: str, path: str, body: Any, **kw: Any) -> tuple[int, Any]:
    status, _, out = call(url, path, body, **kw)
    return status, json.loads(out)


def partial_request(port: int, path: str, declared: int, sent: bytes,
                    token: str | None = None) -> socket.socket:
    """A POST that declares ``declared`` body bytes and sends only ``sent``; the
    caller finishes (or abandons) it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared}\r\n"
            + (f"Authorization: Bearer {token}\r\n" if token else "") + "\r\n").encode()
    s.sendall(head + sent)
    return s


def read_response(s: socket.socket) -> tuple[int, bytes]:
    """Status and raw bytes of the one response on ``s`` (read until the server closes
    or the declared body arrived)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    if not head:
        return 0, b""
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, rest
