"""`distillery serve`: start the server (uvicorn) for one data dir.

Loopback only by default; another address needs `--allow-remote` plus a TLS certificate and key, and prints
a warning. The socket is bound here (port 0 picks a free port), then the token file (0600) and the connection
file `<data dir>/server.json` (url, port, pid, token file; 0600) are written and their paths printed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from backend import __version__
from backend.protocol import PROTOCOL_VERSION

LOOPBACK = ("127.0.0.1", "::1", "localhost")
HEADER_TIMEOUT_S = 10.0  # a connection that has not sent a whole request head by then is closed


def header_timeout_protocol(timeout_s: float) -> type:
    """uvicorn's h11 protocol with a deadline for the request head: a client that connects and sends half a
    request (or nothing) is disconnected after `timeout_s` instead of holding a connection for ever."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        _request_timer: Any = None
        _armed_cycle: Any = None

        def _arm(self) -> None:
            if self._request_timer is not None:
                self._request_timer.cancel()
            self._armed_cycle = self.cycle  # the request before the one we wait for (None at first)
            self._request_timer = self.loop.call_later(timeout_s, self._request_timeout)

        def _incomplete(self) -> bool:
            """No new request head yet, or its body is still arriving."""
            return self.cycle is self._armed_cycle or bool(self.cycle is not None and self.cycle.more_body)

        def _request_timeout(self) -> None:
            if self._incomplete() and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self._request_timer is not None and not self._incomplete():
                self._request_timer.cancel()  # a whole request arrived: the app's own time starts

        def on_response_complete(self) -> None:
            self._arm()  # a kept-alive connection has the same deadline for its next request (armed first:
            super().on_response_complete()  # a pipelined request handled in here cancels it when whole)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._request_timer is not None:
                self._request_timer.cancel()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


class ServeError(Exception):
    """A reason not to start, printed without a traceback."""


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "distillery"


def _lock_data_dir(data_dir: Path) -> Any:
    """One server per data dir; the lock dies with the process (also on SIGKILL)."""
    f = open(data_dir / "server.lock", "a+b")  # noqa: SIM115 - held for the life of the server
    try:
        if os.name == "nt":
            import msvcrt

            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise ServeError(f"another server is using the data dir {data_dir}; stop it or pass another --data-dir") \
            from None
    return f


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if host == "localhost":
        host = "127.0.0.1"
    sock = socket.socket(family, socket.SOCK_STREAM)
    if os.name != "nt":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart on the same port after a crash
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(False)
    return sock


def _check_data_dir(data_dir: Path) -> None:
    """The data dir must be a folder we can create files in; refused with one line otherwise."""
    if data_dir.exists() and not data_dir.is_dir():
        raise ServeError(f"--data-dir {data_dir} exists and is not a folder")
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = data_dir / f".write-test-{os.getpid()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ServeError(f"--data-dir {data_dir} is not writable ({exc.strerror or exc.__class__.__name__}); "
                         "choose another with --data-dir") from None


def serve(host: str = "127.0.0.1", port: int = 0, data_dir: Path | None = None, token_file: Path | None = None,
          allow_remote: bool = False, tls_cert: Path | None = None, tls_key: Path | None = None,
          access_log: bool = False, memory_fraction: float | None = None,
          header_timeout_s: float = HEADER_TIMEOUT_S) -> int:
    import uvicorn

    from backend.jobs.manager import JobManager
    from backend.server.app import create_app
    from backend.server.auth import allowed_hosts, new_token, write_private

    if host not in LOOPBACK:
        if not allow_remote:
            raise ServeError(f"--host {host} would expose the server beyond this machine; it listens on "
                             "127.0.0.1 unless you also pass --allow-remote with --tls-cert and --tls-key")
        if not (tls_cert and tls_key):
            raise ServeError("--allow-remote needs --tls-cert and --tls-key: the token must not cross a network "
                             "in clear text")
    if not 0.1 <= header_timeout_s <= 3600:
        raise ServeError(f"--request-timeout {header_timeout_s:g} is out of range (allowed: 0.1 .. 3600 seconds)")
    if not 0 <= port <= 65535:
        raise ServeError(f"--port {port} is out of range (allowed: 0 .. 65535; 0 picks a free port)")
    from backend.core.settings import ConfigError
    from backend.jobs.store import StorageError

    data_dir = Path(data_dir or default_data_dir()).expanduser().resolve()
    _check_data_dir(data_dir)
    with contextlib.suppress(OSError):
        os.chmod(data_dir, 0o700)  # prompts, assets and the database are the user's alone
    lock = _lock_data_dir(data_dir)
    token_file = Path(token_file or data_dir / "token").expanduser().resolve()
    try:
        # The job database is opened (and checked writable) before anything announces the server, so a
        # corrupt or read-only database is one line and leaves no connection file behind.
        manager = JobManager(data_dir, memory_fraction=memory_fraction)
    except (StorageError, ConfigError) as exc:
        lock.close()
        raise ServeError(str(exc)) from None
    sock = _bind(host, port)
    port = sock.getsockname()[1]
    token = new_token()
    scheme = "https" if tls_cert else "http"
    shown = f"[{host}]" if ":" in host else ("127.0.0.1" if host == "localhost" else host)
    url = f"{scheme}://{shown}:{port}"
    connection_file = data_dir / "server.json"
    try:
        write_private(token_file, token + "\n")
        write_private(connection_file, json.dumps({
            "url": url, "port": port, "pid": os.getpid(), "token_file": str(token_file),
            "protocol_version": PROTOCOL_VERSION, "version": __version__}, indent=1) + "\n")
    except OSError as exc:
        with contextlib.suppress(OSError):
            connection_file.unlink()
        manager.store.close()
        lock.close()
        raise ServeError(f"cannot write the token or connection file ({exc.strerror or exc})") from None

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if host not in LOOPBACK:
        banner = "!" * 78
        print(f"{banner}\nWARNING: listening on {host}, reachable from other machines. Anyone with the token can "
              f"run jobs and read their files.\n{banner}", file=sys.stderr, flush=True)
    print(f"distillery {__version__} serving on {url}\n  token file:      {token_file}\n"
          f"  connection file: {connection_file}\n  data dir:        {data_dir}", flush=True)

    app = create_app(manager, token, allowed_hosts(port, host))
    config = uvicorn.Config(app, log_level="info", access_log=access_log, lifespan="on",
                            timeout_graceful_shutdown=5, ssl_certfile=str(tls_cert) if tls_cert else None,
                            ssl_keyfile=str(tls_key) if tls_key else None, server_header=False,
                            http=header_timeout_protocol(header_timeout_s), timeout_keep_alive=5)
    class _Server(uvicorn.Server):
        # uvicorn re-raises the stopping signal after its graceful shutdown; that would kill the process before
        # the cleanup below (connection file) and turn a clean stop into status -15. A clean stop exits 0.
        def handle_exit(self, sig, frame):
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    server = _Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        with contextlib.suppress(OSError):
            connection_file.unlink()
        lock.close()
    return 0

