"""The playground's HTTP server: the page, its API, and the limits that make it safe to leave
running.

The model loads once; requests are served one at a time (a lock queues concurrent clicks). The
page is plain HTML and JavaScript from the standard library's HTTP server, no build step. Bad
requests get a 400 with a one-line message, failures a 500 with one line, never a traceback.

A server you can leave running: only Host names of the bound address are answered (a page on
another site cannot reach it through DNS rebinding), other methods than GET and HEAD get a 405,
connections are bounded in number and time out when idle or unfinished (slowloris), a client that
goes away mid-answer is a debug line, and every response is bounded in size.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import sys
import threading
from collections.abc import Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from shortcut_models import logs
from shortcut_models.errors import UsageError
from shortcut_models.serve.page import PAGE
from shortcut_models.serve.playground import MAX_CLASS_NAMES, Busy, Playground

log = logs.get(__name__)

MAX_CONNECTIONS = 128  # open connections at once; more are closed at once (a thread each)
TIMEOUT_S = 10.0  # a connection idle or unfinished this long is closed
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine ('' binds every interface)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_names(host: str, allowed: Iterable[str] = ()) -> set[str]:
    """The Host header values answered: the loopback names, the bound address, and `allowed`."""
    names = {*LOOPBACK_NAMES, *(check_allowed_host(a) for a in allowed)}
    if host not in ("", "0.0.0.0", "::"):
        names.add(check_allowed_host(host))
    return names


def check_allowed_host(name: str) -> str:
    """An --allow-host value: a host name or address without a port (the port of a Host header
    is never compared), lower-cased; anything else is a UsageError ('' answered requests that
    carry no Host header; NAME:PORT could never match)."""
    text = name.strip().lower()
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        address = ipaddress.ip_address(bare)
        return f"[{address}]" if address.version == 6 else str(address)
    except ValueError:
        pass
    labels = text.split(".")
    if not text or len(text) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        hint = " (without a port)" if ":" in text else ""
        raise UsageError(f"--allow-host {name!r} is not a host name or address{hint}")
    return text


_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


def _host_of(header: str) -> str:
    """'localhost:8765' -> 'localhost'; '[::1]:8765' -> '[::1]'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most MAX_CONNECTIONS at once; a client that goes away is a
    debug line, not a traceback on stderr. An IPv6 address (::, ::1, [::1]) binds an IPv6
    socket (the standard library's server is IPv4 only)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, limit: int) -> None:
        host = address[0].strip("[]")
        if ":" in host:
            self.address_family = socket.AF_INET6
            address = (host, address[1])
        self.limit = limit
        self.slots = threading.BoundedSemaphore(limit)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):  # full: close this one, keep the others
            log.debug(f"too many connections: closed one from {client_address}")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError, socket.timeout)):
            log.debug(f"{client_address[0]}: {type(error).__name__} (client went away)")
        else:
            log.error(f"error serving {client_address[0]}: {type(error).__name__}: {error}")


def make_server(
    playground: Playground,
    host: str = "127.0.0.1",
    port: int = 8765,
    allow_hosts: Iterable[str] = (),
    limit: int = MAX_CONNECTIONS,
    timeout: float = TIMEOUT_S,
) -> BoundedServer:
    """A threading HTTP server for `playground` (port 0: any free port)."""
    if not 0 <= port <= 65535:
        raise UsageError(f"port must be in 0..65535, got {port}")
    answered = host_names(host, allow_hosts)

    class Handler(BaseHTTPRequestHandler):
        # every answer has a status line: the standard library treats a request line without a
        # version as HTTP/0.9 and then answers a garbage line with a bare body
        default_request_version = "HTTP/1.0"

        def setup(self) -> None:
            self.timeout = timeout  # the socket's: a request line unfinished this long ends
            super().setup()

        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            self._answer(body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer(body=False)

        def _answer(self, body: bool) -> None:
            self.with_body = body
            url = urlparse(self.path)
            # an absolute-form target (GET http://NAME/...) names the host too: both must be ours
            hosts = [self.headers.get("Host", "")] + ([url.netloc] if url.netloc else [])
            refused = [h for h in hosts if _host_of(h) not in answered]
            if refused or (url.scheme and url.scheme != "http"):
                names = ", ".join(sorted(answered))
                message = f"Host {(refused or hosts)[0]!r} is not served here ({names}; "
                self._json(
                    HTTPStatus.FORBIDDEN, {"error": message + "add names with --allow-host)"}
                )
                return
            try:
                if url.path == "/":
                    self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
                elif url.path == "/api/info":
                    self._json(HTTPStatus.OK, playground.info())
                elif url.path == "/api/classes":
                    query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                    start, count = _ints(query, start=0, count=MAX_CLASS_NAMES)
                    self._json(HTTPStatus.OK, playground.classes(start, count))
                elif url.path == "/api/generate":
                    self._json(HTTPStatus.OK, playground.generate(**_query(url.query)))
                else:
                    self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {url.path}"})
            except Busy as exc:
                retry = {"Retry-After": str(exc.retry_after)}
                self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)}, extra=retry)
            except UsageError as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            except (ConnectionError, TimeoutError):
                raise  # the client went away: handle_error makes it a debug line
            except Exception as exc:  # a one-line answer, never a traceback page
                log.error(f"internal error answering {url.path}", exc_info=True)  # the server's log
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}"})

        def _not_allowed(self) -> None:
            self.with_body = True
            self._json(
                HTTPStatus.METHOD_NOT_ALLOWED,
                {"error": f"method {self.command} not allowed: GET and HEAD only"},
                extra={"Allow": "GET, HEAD"},
            )

        do_POST = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = do_TRACE = _not_allowed  # noqa: N815

        def send_error(self, code: int, message: str | None = None, explain: str | None = None):
            """The standard library's errors (an unknown method, a malformed request line) as
            one JSON line instead of its HTML page."""
            self.with_body = self.command != "HEAD"
            self.close_connection = True
            if code == HTTPStatus.NOT_IMPLEMENTED:  # a method we have no handler for
                code, message = HTTPStatus.METHOD_NOT_ALLOWED, f"method {self.command} not allowed"
            text = message or HTTPStatus(code).phrase
            self._json(HTTPStatus(code), {"error": text}, extra={"Connection": "close"})

        def _json(self, status: HTTPStatus, body: dict, extra: dict | None = None) -> None:
            self._send(status, json.dumps(body).encode(), "application/json", extra)

        def _send(self, status: HTTPStatus, body: bytes, kind: str, extra: dict | None = None):
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if getattr(self, "with_body", True):
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet: no line per request
            pass

    try:
        return BoundedServer((host, port), Handler, limit)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    except OverflowError as exc:
        raise UsageError(f"cannot listen on {host}:{port} ({exc})") from None


def _ints(values: dict[str, str], **defaults: int) -> tuple[int, ...]:
    try:
        return tuple(int(values.get(name, default)) for name, default in defaults.items())
    except ValueError as exc:
        raise UsageError(f"bad parameter value ({exc})") from None


def _query(text: str) -> dict[str, Any]:
    """steps, class, cfg, seed and count from a query string; malformed values are UsageErrors."""
    values = {k: v[-1] for k, v in parse_qs(text).items()}
    unknown = set(values) - {"steps", "class", "cfg", "seed", "count"}
    if unknown:
        raise UsageError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
    try:
        label = values.get("class", "")
        return {
            "steps": int(values.get("steps", "1")),
            "label": None if label in ("", "all") else int(label),
            "cfg": float(values.get("cfg", "1")),
            "seed": int(values.get("seed", "0")),
            "count": int(values.get("count", "16")),
        }
    except ValueError as exc:
        raise UsageError(f"bad parameter value ({exc})") from None
