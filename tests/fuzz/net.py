"""Talking to the servers under test at the byte level: raw HTTP requests (so a body can be cut short or a header
can lie), multipart bodies, and a bounded wait for a port."""

from __future__ import annotations

import socket
import time


def wait_port(port: int, seconds: float, alive=lambda: True) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and alive():
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False


def raw_http(port: int, data: bytes, timeout: float = 30.0) -> tuple[int | None, bytes]:
    """Send ``data`` as is, close our side, read the answer until the server closes. Returns (status, body);
    status None when the server closed without an HTTP answer (allowed for garbage that is not HTTP)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed before reading everything: read what it said
            pass
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        else:
            raise TimeoutError(f"no end of answer within {timeout:g} s")
    raw = b"".join(chunks)
    if not raw.startswith(b"HTTP/"):
        return None, raw
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return status, body


def _dechunk(body: bytes) -> bytes:
    out, rest = [], body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out.append(rest[:size])
        rest = rest[size + 2:]
    return b"".join(out)


def request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
            content_length: int | None = None) -> bytes:
    """An HTTP/1.1 request as bytes; ``content_length`` may differ from the body's (a lying header)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    hdrs = dict(headers or {})
    if body or content_length is not None:
        hdrs.setdefault("Content-Length", str(len(body) if content_length is None else content_length))
    lines += [f"{k}: {v}" for k, v in hdrs.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body


def multipart(fields: list[tuple[str, str | None, bytes]], boundary: str = "edgemedfuzzboundary") -> tuple[bytes, str]:
    """A multipart/form-data body: (field name, file name or None, content) per part."""
    parts = []
    for name, filename, content in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                     f"Content-Type: application/octet-stream\r\n\r\n".encode("utf-8", "surrogateescape")
                     + content + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"
