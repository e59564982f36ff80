"""Who may talk to the server (docs/RELIABILITY.md §2), checked before any route runs.

`Guard` is a plain ASGI middleware. For every HTTP request (and any WebSocket upgrade), in this order:
1. `Host` must be exactly one of the allowed host:port values (loopback names and the bound address); an
   empty or missing Host is refused. This is what stops DNS rebinding.                          -> 403
2. Any `Origin` header (including `null`) and any `Sec-Fetch-Site` other than `none` are refused: our
   clients send neither, browsers always do.                                                    -> 403
3. Every path but `/v1/health` needs `Authorization: Bearer <token>`, compared in constant time.  -> 401
4. Request bodies are capped (Content-Length and the bytes actually received): 64 KiB, or 256 MiB for
   the PLY upload of `/v1/meshes`.                                                             -> 413
All of this happens before the request reaches a route, so a refused request never changes state.

The token is 256 random bits, new at every start, written to a file only the user can read; it never
appears in argv, logs or URLs.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

PUBLIC_PATHS = frozenset({"/v1/health"})
MAX_BODY_BYTES = 64 * 1024  # a job spec (docs/RELIABILITY.md §2)
MAX_UPLOAD_BYTES = 256 * 1024 * 1024  # a 3DGS PLY for conversion (a million Gaussians at SH degree 3)
UPLOAD_PATHS = frozenset({"/v1/meshes"})  # the routes that take a file; every other body is a small JSON


def new_token() -> str:
    return secrets.token_urlsafe(32)  # 32 random bytes


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by the owner only (0600), atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    # O_EXCL: never reuse a file (or follow a link) someone else put at the temp name; O_NOFOLLOW as well
    # where the platform has it.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)  # in case the file existed with wider permissions
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def allowed_hosts(port: int, bound_host: str) -> frozenset[str]:
    hosts = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
    if bound_host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::"):
        hosts.add(f"[{bound_host}]:{port}" if ":" in bound_host else f"{bound_host}:{port}")
    return frozenset(hosts)


def error_body(code: str, message: str, hint: str = "") -> bytes:
    return json.dumps({"code": code, "message": message, "hint": hint}).encode()


class Guard:
    def __init__(self, app: Any, token: str, hosts: frozenset[str], max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self._token = token.encode()
        self.hosts = hosts
        self.max_body = max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, list[bytes]] = {}
        for k, v in scope.get("headers", []):
            headers.setdefault(k.lower(), []).append(v)
        refusal = self._check(scope, headers)
        if refusal is not None:
            status, code, message, hint = refusal
            await _respond(scope, send, status, code, message, hint,
                           [(b"www-authenticate", b"Bearer")] if status == 401 else [])
            return
        if scope["type"] == "http":
            lengths = headers.get(b"content-length", [])
            try:
                declared = int(lengths[0]) if lengths else 0
            except ValueError:
                declared = -1
            if len(lengths) > 1 or declared < 0:
                await _respond(scope, send, 400, "BAD_REQUEST", "invalid Content-Length")
                return
            limit = MAX_UPLOAD_BYTES if scope.get("path") in UPLOAD_PATHS else self.max_body
            if declared > limit:
                await _respond(scope, send, 413, "TOO_LARGE", f"the request body is {declared} bytes",
                               f"at most {limit} bytes")
                return
            receive = _capped(receive, limit)  # a chunked body is counted as it arrives
        await self.app(scope, receive, send)

    def _check(self, scope: dict, headers: dict[bytes, list[bytes]]) -> tuple[int, str, str, str] | None:
        host = headers.get(b"host", [])
        if len(host) != 1 or host[0].decode("latin-1") not in self.hosts:
            return 403, "FORBIDDEN_HOST", "this Host is not served here", \
                "connect to 127.0.0.1, localhost or [::1] with the server's port"
        if b"origin" in headers:
            return 403, "FORBIDDEN_ORIGIN", "requests from web pages are refused", \
                "use a local client (it sends no Origin header)"
        fetch_site = headers.get(b"sec-fetch-site", [])
        if fetch_site and fetch_site != [b"none"]:
            return 403, "FORBIDDEN_ORIGIN", "cross-site requests are refused", "use a local client"
        if scope.get("path") in PUBLIC_PATHS and scope.get("method", "GET") in ("GET", "HEAD"):
            return None
        auth = headers.get(b"authorization", [])
        if len(auth) != 1 or not auth[0].startswith(b"Bearer ") or \
                not hmac.compare_digest(auth[0][len(b"Bearer "):].strip(), self._token):
            return 401, "UNAUTHORIZED", "a valid token is needed", \
                "send 'Authorization: Bearer <token>' with the token from the server's token file"
        return None


class BodyTooLarge(Exception):
    """Raised while a route reads a body past the cap; the app turns it into a 413."""


def _capped(receive: Any, limit: int) -> Any:
    seen = 0

    async def wrapped() -> dict:
        nonlocal seen
        message = await receive()
        if message.get("type") == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge()
        return message

    return wrapped


async def _respond(scope: dict, send: Any, status: int, code: str, message: str, hint: str = "",
                   extra: list[tuple[bytes, bytes]] | None = None) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = error_body(code, message, hint)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(extra or [])]})
    await send({"type": "http.response.body", "body": body})
