"""HTTP transport: one short-lived http.client connection per request, a timeout on every socket operation,
errors turned into BackendError. Standard library only.

The token goes in the Authorization header only (never in a URL). No Origin header is ever sent: the server
refuses any request that has one. When a session was made from a token file and the server answers 401 (it
writes a new token at every start), the file is read again and the request retried once.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.parse
from pathlib import Path
from typing import Any

MAX_RESPONSE_BYTES = 1 << 30  # an artifact (a large final asset) at most; events and JSON are far smaller


class BackendError(Exception):
    """An error from the server ({code, message, hint}) or from the connection (status None).

    Connection codes: CONNECTION_REFUSED (nothing listens: the backend is not running), CONNECTION_LOST
    (the connection closed mid-request), TIMEOUT (no answer in time), CONNECTION_ERROR, BAD_RESPONSE."""

    def __init__(self, code: str, message: str, hint: str = "", status: int | None = None, field: str = "") -> None:
        super().__init__(f"{code}: {message}" + (f" ({hint})" if hint else ""))
        self.code = code
        self.message = message
        self.hint = hint
        self.status = status
        self.field = field  # the setting at fault (dotted key), for INVALID_CONFIG

    @property
    def is_connection_error(self) -> bool:
        return self.status is None


def strict_loads(text: bytes | str) -> Any:
    """json.loads that refuses NaN and Infinity (a server never sends them; a corrupted stream might)."""

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} in JSON")

    return json.loads(text, parse_constant=no_constant)


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        try:
            return strict_loads(self.body)
        except ValueError as exc:
            raise BackendError("BAD_RESPONSE", f"the server sent invalid JSON: {exc}") from None


class Transport:
    def __init__(self, base_url: str, token: str, timeout: float = 5.0, token_file: Path | None = None) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must look like http://127.0.0.1:PORT, got {base_url!r}")
        if parts.path not in ("", "/") or parts.query or parts.username:
            raise ValueError(f"base_url must be scheme://host:port only, got {base_url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_url = f"{self.scheme}://{'[' + self.host + ']' if ':' in self.host else self.host}:{self.port}"
        self.token = token.strip()
        self.timeout = float(timeout)
        self.token_file = Path(token_file).expanduser() if token_file else None

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method: str, path: str, *, query: dict[str, Any] | None = None, body: Any = None,
                timeout: float | None = None, auth: bool = True, max_bytes: int = MAX_RESPONSE_BYTES) -> Response:
        """Send one request; returns the response for 2xx, raises BackendError otherwise."""
        response = self._once(method, path, query, body, timeout, auth, max_bytes)
        if response.status == 401 and auth and self._reload_token():
            response = self._once(method, path, query, body, timeout, auth, max_bytes)
        if response.status >= 400:
            raise _error_from(response)
        return response

    def _reload_token(self) -> bool:
        if self.token_file is None:
            return False
        try:
            token = self.token_file.read_text().strip()
        except OSError:
            return False
        changed = bool(token) and token != self.token
        if changed:
            self.token = token
        return changed

    def _once(self, method: str, path: str, query: dict[str, Any] | None, body: Any, timeout: float | None,
              auth: bool, max_bytes: int) -> Response:
        url = path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = {"Accept": "application/json, application/x-ndjson, */*", "User-Agent": "distillery-client"}
        data = None
        if isinstance(body, bytes):  # a file upload (POST /v1/meshes)
            data = body
            headers["Content-Type"] = "application/octet-stream"
        elif body is not None:
            data = json.dumps(body, allow_nan=False).encode()
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        conn = self._connection(self.timeout if timeout is None else timeout)
        try:
            conn.request(method, url, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read(max_bytes + 1)
            if len(payload) > max_bytes:
                raise BackendError("BAD_RESPONSE", f"the response is larger than {max_bytes} bytes")
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload)
        except TimeoutError:
            raise BackendError("TIMEOUT", f"no answer from {self.base_url} in time",
                               "the backend is busy or stopped") from None
        except ConnectionRefusedError:
            raise BackendError("CONNECTION_REFUSED", f"nothing is listening at {self.base_url}",
                               "start the backend, or check the port") from None
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, http.client.RemoteDisconnected,
                http.client.IncompleteRead):
            raise BackendError("CONNECTION_LOST", f"the connection to {self.base_url} closed",
                               "the backend may have stopped") from None
        except (http.client.HTTPException, ssl.SSLError) as exc:
            raise BackendError("BAD_RESPONSE", f"invalid answer from {self.base_url}: {type(exc).__name__}") \
                from None
        except OSError as exc:
            raise BackendError("CONNECTION_ERROR", f"cannot reach {self.base_url}: {exc.strerror or exc}") \
                from None
        finally:
            conn.close()


def _error_from(response: Response) -> BackendError:
    try:
        data = strict_loads(response.body)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("code"), str):
        return BackendError(data["code"], str(data.get("message", "")), str(data.get("hint") or ""),
                            response.status, str(data.get("field") or ""))
    return BackendError(f"HTTP_{response.status}", response.body[:200].decode("utf-8", "replace"), "",
                        response.status)
