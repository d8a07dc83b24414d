"""`latentcat serve`: a local, read-only web explorer of a catalogue, used with a mouse.

    latentcat serve --catalog demo_catalog            # http://127.0.0.1:8765/

    >>> from latentcat.serve import make_server
    >>> server = make_server("demo_catalog", port=0)  # a free port
    >>> server.server_address
    >>> server.serve_forever()

The map of the whole catalogue (pan, zoom, colour; a click opens the nearest source; with its
script, the wheel zooms, a drag pans, hovering names a source and a shift-drag selects a box
of sources, listed, downloadable and ranked "more like these"), a page per source (its curves,
metadata and k neighbours, each a link to its own page), the neighbours of an uploaded light
curve, the top outliers, a discovery session and the classifier's classes. Pages are HTML
rendered here, with PNG images; the one script is the explorer's own (``static/map.js``,
installed with the package, no other origin allowed), and every page works without it; the
URL holds the whole state.

Built on the standard library's ``http.server.ThreadingHTTPServer`` (one thread per request)
and matplotlib: nothing to install beyond latentcat. It binds 127.0.0.1 unless told
otherwise, and while it does, answers only requests addressed to this machine's loopback
names (a web page elsewhere cannot reach it through a DNS name of its own). Bound to any
other address it serves only the holders of its access token, as Jupyter does: a random
token is made at start and printed in the address to open (``/?token=...``); that request
sets an HttpOnly, SameSite=Strict cookie and is redirected to the address without the token,
and every later request must carry the cookie (or ``Authorization: Bearer <token>``). See
`latentcat.serve.app` for the routes and what a page may pass to the catalogue.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

from latentcat.limits import MAX_UPLOAD_BYTES, SERVE_TIMEOUT
from latentcat.serve.app import SECURITY_HEADERS, Explorer
from latentcat.serve.state import Response, cookie, set_cookie

__all__ = ["Explorer", "make_server", "serve"]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_DRAIN = 16 * 1024 * 1024  # an oversized upload is read and dropped up to this much, so the client sees the answer
TOKEN_COOKIE = "latentcat_token"
"""The cookie that carries the access token once the token's address has been opened."""


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _Handler(BaseHTTPRequestHandler):
    server_version = "latentcat-serve"
    sys_version = ""
    explorer: Explorer
    quiet = True

    def do_GET(self) -> None:  # noqa: N802 - http.server's names
        self._answer("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._answer("POST")

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer("HEAD")

    def _answer(self, method: str) -> None:
        explorer = self.explorer
        if self.server.loopback_only and not self._host_ok():
            response = explorer.message_page("this explorer answers only requests addressed to "
                                             "localhost or 127.0.0.1", 400)
            self._send(response, method)
            return
        if self.server.token is not None:
            refused = self._token_refusal()
            if refused is not None:
                self._send(refused, method)
                return
        body = b""
        if method == "POST":
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._send(explorer.message_page("an upload needs a Content-Length", 411), method)
                return
            if length < 0 or length > explorer.max_upload + 64 * 1024:
                limit = explorer.max_upload / 1024 / 1024
                if 0 < length <= explorer.max_upload + _DRAIN:
                    self.rfile.read(length)  # drop it, so the client reads the answer
                self.close_connection = True
                self._send(explorer.message_page(
                    f"the upload is {max(length, 0) / 1024 / 1024:.3g} MiB; at most {limit:.3g} MiB", 413), method)
                return
            body = self.rfile.read(length)
        response = explorer.respond("GET" if method == "HEAD" else method, self.path, self.headers, body)
        self._send(response, method)

    def _token_refusal(self) -> Response | None:
        """None when the request carries the access token (cookie or bearer header); for the
        token in the URL, the redirect that sets the cookie; else the refusal."""
        token = self.server.token
        bearer = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if any(hmac.compare_digest(given.encode(), token.encode())
               for given in (cookie(self.headers, TOKEN_COOKIE), bearer) if given):
            return None
        parts = urlsplit(self.path)
        params = parse_qsl(parts.query, keep_blank_values=True)
        given = next((v for k, v in params if k == "token"), "")
        if given and hmac.compare_digest(given.encode(), token.encode()):
            rest = urlencode([(k, v) for k, v in params if k != "token"])
            return Response(303, "text/plain; charset=utf-8", b"", {
                "Location": parts.path + (f"?{rest}" if rest else ""), **set_cookie(TOKEN_COOKIE, token)})
        return self.explorer.message_page("this explorer is served to the network and needs its access token: "
                                          "open the address it printed when it started (ending in /?token=...)", 403)

    def _host_ok(self) -> bool:
        host = self.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]")[0]
        return name.lower() in LOOPBACK_NAMES or (name and _is_loopback(name))

    def _send(self, response: Response, method: str) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            headers = {"Cache-Control": "no-store", **SECURITY_HEADERS, **response.headers}
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):  # the browser left (a new page, a dropped image)
            self.close_connection = True

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
        if not self.quiet:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


class ExplorerServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer answering with an `Explorer` (``.explorer``)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, explorer: Explorer, quiet: bool = True, token: str | None = None):
        handler = type("Handler", (_Handler,), {"explorer": explorer, "quiet": quiet})
        super().__init__(address, handler)
        self.explorer = explorer
        self.loopback_only = _is_loopback(address[0])
        self.token = token

    def server_close(self) -> None:
        super().server_close()
        self.explorer.close()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"

    @property
    def login_url(self) -> str:
        """The address to open: `url`, with the access token where the server has one."""
        return self.url + (f"?token={self.token}" if self.token is not None else "")


def make_server(catalog, host: str = "127.0.0.1", port: int = 8765, stage=None,
                max_upload: int = MAX_UPLOAD_BYTES, quiet: bool = True, timeout: float = SERVE_TIMEOUT,
                answers=None, token: str | None = None) -> ExplorerServer:
    """The explorer of ``catalog`` (opened read-only) on ``host:port`` (port 0: a free one),
    not yet serving: call ``serve_forever()`` (in a thread, if you like) and ``server_close()``.
    ``timeout``: seconds a page's query (a neighbour filter) may run before it is stopped;
    ``answers``: a discovery answers file to resume from and save to after every answer;
    ``token``: the access token every request must carry (see the module docstring), made at
    random when ``host`` is not a loopback address and none is given."""
    if token is None and not _is_loopback(host):
        token = secrets.token_urlsafe(24)
    explorer = Explorer(catalog, stage=stage, max_upload=max_upload, timeout=timeout, answers=answers)
    try:
        return ExplorerServer((host, int(port)), explorer, quiet=quiet, token=token)
    except OSError as err:
        explorer.close()
        from latentcat.errors import LatentcatError

        raise LatentcatError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def serve(catalog, host: str = "127.0.0.1", port: int = 8765, stage=None, max_upload: int = MAX_UPLOAD_BYTES,
          quiet: bool = False, announce=print, timeout: float = SERVE_TIMEOUT, answers=None,
          token: str | None = None) -> None:
    """Serve the explorer until interrupted (Ctrl-C); see `make_server`."""
    server = make_server(catalog, host, port, stage=stage, max_upload=max_upload, quiet=quiet, timeout=timeout,
                         answers=answers, token=token)
    announce(f"latentcat explorer of {server.explorer.cat.path} at {server.login_url} (Ctrl-C stops it)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
