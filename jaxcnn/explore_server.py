"""The local web server behind ``jaxcnn explore RUN``: the page's three files and a small JSON API.

Python's own ``http.server`` is enough for one user on loopback, so the page needs no web
framework. Safety by construction: the page's files are a fixed table (no request becomes a file
path), request bodies are size-limited and read only when they announce their size, every answer
is JSON or one of those files, and a bad request gets a 4xx with a message while the server goes
on serving. The API (all JSON; images as base64, see :mod:`jaxcnn.explorer`):

- ``GET /api/network``: layers, classes, shapes, learning curves, first-layer filters;
- ``POST /api/predict`` ``{"pixels"}``: class probabilities;
- ``POST /api/activations`` ``{"pixels"}``: every layer's feature maps;
- ``POST /api/explain`` ``{"pixels", "layer", "row", "col", "channel"}``: one pixel's arithmetic;
- ``POST /api/decode`` ``{"file", "name"}``: an uploaded image file's pixels, read as ``jaxcnn predict`` reads it;
- ``POST /api/why`` ``{"pixels", "method", "class", "layer", "randomize"}``: a saliency heatmap (class and layer
  may be null: the predicted class, the last spatial layer; randomize: how many top weighted layers are random);
- ``POST /api/unit`` ``{"layer", "unit"}``: what a filter or unit looks for, and its top test images;
- ``GET /api/test-image?index=N``, ``GET /api/confusion``, ``GET /api/confusion-cell?true=T&predicted=P``.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import traceback
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from jaxcnn.explorer import Explorer, ExploreRequestError
from jaxcnn.numbers import parse_int

DEFAULT_HOST = "127.0.0.1"
MAX_BODY_BYTES = 32 * 2**20
"""The largest request body accepted: an uploaded photo of 24 MB, in base64, fits."""
REQUEST_TIMEOUT_SECONDS = 30
LISTEN_BACKLOG = 128
"""Connections the OS queues while every thread is busy (the standard library's 5 reset a page's bursts)."""
PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/explore.js": ("explore.js", "text/javascript; charset=utf-8"),
    "/explore.css": ("explore.css", "text/css; charset=utf-8"),
}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'",
    "Cache-Control": "no-store",
}


def page_file(name: str) -> bytes:
    """One of the page's files, from the installed package."""
    return resources.files("jaxcnn").joinpath("explore_page", name).read_bytes()


def _int_field(source: dict[str, Any], name: str) -> int:
    value = source.get(name)
    if isinstance(value, list):  # from a query string
        value = value[0] if len(value) == 1 else None
    if isinstance(value, str):
        try:
            value = parse_int(value, f"'{name}'", negative=True)
        except ValueError as err:
            raise ExploreRequestError(str(err)) from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ExploreRequestError(f"'{name}' must be an integer")
    return value


def _optional_int(source: dict[str, Any], name: str) -> int | None:
    return None if source.get(name) is None else _int_field(source, name)


def _optional_str(source: dict[str, Any], name: str) -> str | None:
    value = source.get(name)
    if value is not None and not isinstance(value, str):
        raise ExploreRequestError(f"'{name}' must be a string or null")
    return value


def split_host(header: str) -> tuple[str, int | None] | None:
    """A ``Host`` header's name (lower case, IPv6 without brackets) and port (None when it names none),
    or None when it is malformed."""
    if header.startswith("["):
        name, bracket, rest = header[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else None
    else:
        name, colon, port_text_or_empty = header.rpartition(":") if header.count(":") == 1 else (header, "", "")
        port_text = port_text_or_empty if colon else None
    if not name:
        return None
    try:
        port = None if port_text is None else parse_int(port_text, "port")
    except ValueError:
        return None
    return name.lower().rstrip("."), port


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def host_allowed(header: str | None, bound: str, port: int, allowed_names: tuple[str, ...] = ()) -> bool:
    """Whether a request's ``Host`` header names this server, which defeats DNS rebinding: a page from
    another site that makes its name resolve to this machine still sends its own name, and is refused.

    Accepted: ``localhost``, a loopback address, the bound address and ``allowed_names`` (``--allow-host``),
    each with this server's port; on a non-loopback address (``--host 0.0.0.0``), any IP address too, since
    a rebinding attack needs a name."""
    parts = split_host(header) if header else None
    if parts is None:
        return False
    name, asked_port = parts
    if (asked_port if asked_port is not None else 80) != port:
        return False
    if name == "localhost" or name == bound.lower() or name in (n.lower().rstrip(".") for n in allowed_names):
        return True
    address, bound_address = _ip(name), _ip(bound)
    if address is None:
        return False
    return address.is_loopback or bound_address is None or not bound_address.is_loopback


class ExploreHandler(BaseHTTPRequestHandler):
    """Answers one request; the explorer is the server's ``explorer`` attribute."""

    server: ExploreServer
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT_SECONDS
    server_version = "jaxcnn-explore"

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def _foreign_host(self) -> bool:
        """Answer 403 and log one line when the request names another host (DNS rebinding); True then."""
        header = self.headers.get("Host")
        server = self.server
        if host_allowed(header, server.bound_host, server.server_port, server.allowed_hosts):
            return False
        shown = repr(header[:100]) if header else "none"
        print(f"jaxcnn explore: refused a request from {self.client_address[0]} for Host {shown} (not this server; "
              "--allow-host NAME allows a name)", file=sys.stderr, flush=True)  # fmt: skip
        self.close_connection = True
        self._error(HTTPStatus.FORBIDDEN, f"this server answers requests for {server.url} only, not for Host "
                    f"{shown}; start it with --allow-host NAME to allow another name")  # fmt: skip
        return True

    def do_GET(self) -> None:
        if self._foreign_host():
            return
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        explorer = self.server.explorer
        routes: dict[str, Callable[[], dict[str, Any]]] = {
            "/api/network": explorer.network,
            "/api/test-image": lambda: explorer.test_image(_int_field(query, "index")),
            "/api/confusion": explorer.confusion,
            "/api/confusion-cell": lambda: explorer.confusion_cell(
                _int_field(query, "true"), _int_field(query, "predicted")
            ),
        }
        if url.path in PAGE_FILES:
            name, content_type = PAGE_FILES[url.path]
            self._send(HTTPStatus.OK, page_file(name), content_type)
        elif url.path in routes:
            self._answer(routes[url.path])
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such page: {url.path[:200]}")

    def do_POST(self) -> None:
        if self._foreign_host():
            return
        path = urlsplit(self.path).path
        explorer = self.server.explorer
        if path not in ("/api/predict", "/api/activations", "/api/explain", "/api/decode", "/api/why", "/api/unit"):
            self._error(HTTPStatus.NOT_FOUND, f"no such API: {path[:200]}")
            return
        try:
            body = self._read_json()
            if path == "/api/decode":
                self._answer(lambda: explorer.decode_upload(body.get("file"), body.get("name")))
                return
            if path == "/api/unit":
                self._answer(lambda: explorer.unit_picture(str(body.get("layer")), _int_field(body, "unit")))
                return
            pixels = explorer.decode_pixels(body.get("pixels"))
        except ExploreRequestError as error:
            self._error(error.status, str(error))
            return
        if path == "/api/predict":
            self._answer(lambda: explorer.predict(pixels))
        elif path == "/api/activations":
            self._answer(lambda: explorer.activations(pixels))
        elif path == "/api/why":
            self._answer(lambda: explorer.why(pixels, str(body.get("method")), _optional_int(body, "class"),
                                              _optional_str(body, "layer"),
                                              _optional_int(body, "randomize") or 0))  # fmt: skip
        else:
            self._answer(lambda: explorer.explain(pixels, str(body.get("layer")), _int_field(body, "row"),
                                                  _int_field(body, "col"), _int_field(body, "channel")))  # fmt: skip

    def _read_json(self) -> dict[str, Any]:
        try:
            length = parse_int(self.headers.get("Content-Length", ""), "Content-Length")
        except ValueError as err:
            self.close_connection = True
            raise ExploreRequestError(f"a POST needs a Content-Length header: {err}",
                                      HTTPStatus.LENGTH_REQUIRED) from None  # fmt: skip
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the body is not read
            raise ExploreRequestError(f"the request body has {length:,} bytes; at most {MAX_BODY_BYTES:,} are "
                                      "accepted", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)  # fmt: skip
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ExploreRequestError("the request body is not JSON") from None
        if not isinstance(body, dict):
            raise ExploreRequestError("the request body must be a JSON object")
        return body

    def _answer(self, compute: Callable[[], dict[str, Any]]) -> None:
        try:
            answer = compute()
        except ExploreRequestError as error:
            self._error(error.status, str(error))
            return
        except Exception:  # a bug: report it, keep serving
            traceback.print_exc(file=sys.stderr)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "the explorer failed on this request (see the server's log)")
            return
        self._send(HTTPStatus.OK, json.dumps(answer).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._send(status, json.dumps({"error": message}).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class ExploreServer(ThreadingHTTPServer):
    """A threading HTTP server that holds the explorer its handlers answer from."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self,
        explorer: Explorer,
        host: str = DEFAULT_HOST,
        port: int = 0,
        verbose: bool = False,
        allowed_hosts: tuple[str, ...] = (),
    ) -> None:
        self.explorer = explorer
        self.verbose = verbose
        self.bound_host = host
        self.allowed_hosts = tuple(allowed_hosts)
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), ExploreHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-request is normal for a page (a closed tab, a newer stroke): one
        line with --verbose, nothing otherwise. Anything else is a bug: its traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            if self.verbose:
                print(f"jaxcnn explore: {client_address[0]} disconnected mid-request", file=sys.stderr)
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"
