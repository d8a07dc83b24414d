"""The explorer on the web: a Starlette application around an `Explorer`, served by uvicorn.

`create_app` maps the routes (see `latentcat.serve.app`) to the explorer's pages and adds what
every request goes through (`Guard`): the host check on loopback, the access token elsewhere,
the query length limit and the security headers (a Content-Security-Policy that allows the
explorer's own script and nothing else). Errors are pages: a bad input one message with its
status, anything else a one-line 500 page (the traceback goes to the server's log).

`make_server` binds a socket and returns an `ExplorerServer` (uvicorn in this process, in a
thread if you like); `serve` runs until Ctrl-C, with ``workers`` processes if asked (uvicorn's
supervisor; each process opens the catalogue read-only, and they share the discovery sessions
through files, see `latentcat.serve.sessions`).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import secrets
import shutil
import socket
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from latentcat.errors import LatentcatError, one_line
from latentcat.limits import MAX_UPLOAD_BYTES, SERVE_TIMEOUT
from latentcat.serve.app import Explorer
from latentcat.serve.sessions import KEY, new_key
from latentcat.serve.state import PageError

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                               "script-src 'self'; connect-src 'self'; "
                               "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
MAX_QUERY = 4096
"""Longest query string, and longest answer form, accepted (characters)."""

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
TOKEN_COOKIE = "latentcat_token"
"""The cookie that carries the access token once the token's address has been opened."""
SESSION_COOKIE = "latentcat_session"
"""The cookie that keys a browser's discovery session."""
FORM_SLACK = 64 * 1024
"""Bytes an upload's form may hold beyond its file (the other fields, the part headers)."""
DRAIN = 16 * 1024 * 1024
"""An oversized upload is read and dropped up to this much, so that the browser sees the answer."""
SETTINGS_ENV = "LATENTCAT_SERVE_SETTINGS"
"""The environment variable that hands the explorer's settings to the worker processes."""


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def set_cookie(response, name: str, value: str) -> None:
    """An HttpOnly, SameSite=Strict cookie for the whole explorer."""
    response.set_cookie(name, value, httponly=True, samesite="strict", path="/")


class Guard:
    """What every request goes through before its page (a pure ASGI middleware): on loopback,
    only requests addressed to a loopback name (a web page elsewhere cannot reach the
    explorer through a DNS name of its own); with a token, only its holders (cookie,
    ``Authorization: Bearer``, or ``?token=`` once, answered by a redirect that sets the cookie
    and drops the token from the address); queries of at most `MAX_QUERY` characters; and
    on every answer the security headers and, unless the page set one, ``Cache-Control: no-store``."""

    def __init__(self, app, explorer: Explorer, token: str | None, loopback_only: bool):
        self.app, self.explorer, self.token, self.loopback_only = app, explorer, token, loopback_only

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.update(SECURITY_HEADERS)
                if "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        refusal = self.refusal(Request(scope))
        await (refusal or self.app)(scope, receive, send_with_headers)

    def refusal(self, request: Request):
        """The answer to a request that may not reach its page, else None."""
        if self.loopback_only:
            name = request.headers.get("host", "")
            name = name[1:].split("]")[0] if name.startswith("[") else name.rsplit(":", 1)[0]
            if not (name.lower() in LOOPBACK_NAMES or (name and is_loopback(name))):
                return self.explorer.message_page("this explorer answers only requests addressed to localhost or "
                                                  "127.0.0.1", 400)
        query = request.url.query
        if len(query) > MAX_QUERY:
            return self.explorer.message_page(f"the URL's query is {len(query)} characters long; at most {MAX_QUERY}", 414)
        if self.token is None:
            return None
        token = self.token.encode()
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if any(hmac.compare_digest(given.encode(), token) for given in (request.cookies.get(TOKEN_COOKIE), bearer)
               if given):
            return None
        params = parse_qsl(query, keep_blank_values=True)
        given = next((v for k, v in params if k == "token"), "")
        if given and hmac.compare_digest(given.encode(), token):
            rest = urlencode([(k, v) for k, v in params if k != "token"])
            response = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), status_code=303)
            set_cookie(response, TOKEN_COOKIE, self.token)
            return response
        return self.explorer.message_page("this explorer is served to the network and needs its access token: open "
                                          "the address it printed when it started (ending in /?token=...)", 403)


async def read_body(request: Request, limit: int, what: str, allowed: int | None = None):
    """The body of a request, as it streams in, refused (413) past ``limit`` bytes; the
    message names ``allowed`` (default ``limit``) as the most a user may send."""
    allowed = f"{(allowed or limit) / 2**20:.3g} MiB"
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        if int(declared) <= limit + DRAIN:
            async for _ in request.stream():  # read and drop it, so that the browser reads the answer
                pass
        raise PageError(f"the {what} is {int(declared) / 2**20:.3g} MiB; at most {allowed}", 413)
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PageError(f"the {what} is over {limit / 2**20:.3g} MiB; at most {allowed}", 413)
        yield chunk


def create_app(explorer: Explorer, token: str | None = None, loopback_only: bool = True) -> Starlette:
    """The ASGI application of an explorer (routes: `latentcat.serve.app`)."""

    def page(handler):
        """A GET route answered by ``handler(params)``, in a worker thread."""
        def endpoint(request: Request):
            return handler(dict(request.query_params))
        return endpoint

    def session_key(request: Request) -> tuple[str, bool]:
        key = request.cookies.get(SESSION_COOKIE, "")
        return (key, False) if KEY.fullmatch(key) else (new_key(), True)

    def with_session(handler):
        """A route answered by ``handler(params, session key)``; a browser without a session
        key gets one (a cookie)."""
        def endpoint(request: Request):
            key, fresh = session_key(request)
            response = handler(dict(request.query_params), key)
            if fresh:
                set_cookie(response, SESSION_COOKIE, key)
            return response
        return endpoint

    async def answer(request: Request):
        if not request.headers.get("content-type", "").lower().startswith("application/x-www-form-urlencoded"):
            raise PageError("send the answer as a form (application/x-www-form-urlencoded)", 415)
        body = b"".join([chunk async for chunk in read_body(request, MAX_QUERY, "answer")])
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        key, fresh = session_key(request)
        response = await run_in_threadpool(explorer.answer, form, key)
        if fresh:
            set_cookie(response, SESSION_COOKIE, key)
        return response

    async def upload(request: Request):
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            raise PageError("send the form as multipart/form-data (the upload form does)", 415)
        parser = MultiPartParser(request.headers, read_body(request, explorer.max_upload + FORM_SLACK, "upload", explorer.max_upload),
                                 max_files=1, max_fields=16, max_part_size=MAX_QUERY)
        try:
            form = await parser.parse()
        except MultiPartException as err:
            raise PageError(f"the upload is not a readable form: {err.message}") from None
        try:
            fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
            sent = form.get("file")
            file = None
            if sent is not None and not isinstance(sent, str):
                data = await sent.read(explorer.max_upload + 1)
                if len(data) > explorer.max_upload:
                    raise PageError(f"the file is over {explorer.max_upload / 2**20:.3g} MiB; at most "
                                    f"{explorer.max_upload / 2**20:.3g} MiB", 413)
                file = (sent.filename or "upload.csv", data)
        finally:
            await form.close()
        return await run_in_threadpool(explorer.upload, fields, file)

    def error_page(request: Request, exc: Exception):
        if isinstance(exc, HTTPException):
            message = {404: f"no page at {request.url.path}",
                       405: f"{request.method} is not accepted at {request.url.path}"}.get(exc.status_code, exc.detail)
            return explorer.message_page(message, exc.status_code)
        status = exc.status if isinstance(exc, PageError) else 400
        return explorer.message_page(one_line(exc), status)

    def server_error(request: Request, exc: Exception):
        print(f"latentcat serve: {request.method} {str(request.url)[:200]}: internal error", file=sys.stderr)
        return explorer.message_page(f"internal error ({type(exc).__name__}); the server's log has the details", 500)

    routes = [
        Route("/", page(explorer.page_main)),
        Route("/map.png", page(explorer.map_png)),
        Route("/click", page(explorer.click)),
        Route("/plot/source.png", page(explorer.source_png)),
        Route("/plot/thumb.png", page(explorer.thumb_png)),
        Route("/plot/lightcurve.png", page(explorer.light_curve_png)),
        Route("/upload", page(explorer.page_upload)),
        Route("/upload", upload, methods=["POST"]),
        Route("/outliers", with_session(explorer.page_outliers)),
        Route("/discover", with_session(lambda params, key: explorer.page_discover(key))),
        Route("/discover", answer, methods=["POST"]),
        Route("/discover.csv", with_session(lambda params, key: explorer.answers_csv(key))),
        Route("/selection", page(explorer.page_selection)),
        Route("/selection.csv", page(lambda params: explorer.selection_file(params, "csv"))),
        Route("/selection.parquet", page(lambda params: explorer.selection_file(params, "parquet"))),
        Route("/like", page(explorer.page_like)),
        Route("/api/nearest", page(explorer.api_nearest)),
        Route("/classes", page(explorer.page_classes)),
        Route("/latent", page(explorer.page_latent)),
        Route("/latent.png", page(explorer.latent_png)),
        Mount("/static", StaticFiles(packages=[("latentcat.serve", "static")]), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: error_page, LatentcatError: error_page,
                                                       Exception: server_error})
    app.add_middleware(Guard, explorer=explorer, token=token, loopback_only=loopback_only)
    app.state.explorer = explorer
    return app


class ExplorerServer:
    """An explorer served by uvicorn on a bound socket, in this process: call `serve_forever`
    (in a thread, if you like), then `shutdown` and `server_close`."""

    def __init__(self, explorer: Explorer, sock: socket.socket, token: str | None, quiet: bool = True):
        import uvicorn

        self.explorer, self.token, self._socket = explorer, token, sock
        app = create_app(explorer, token=token, loopback_only=is_loopback(self.server_address[0]))
        self._server = uvicorn.Server(uvicorn.Config(app, lifespan="off", access_log=not quiet,
                                                     log_level="warning" if quiet else "info"))
        self._stopped = threading.Event()

    @property
    def server_address(self) -> tuple:
        return self._socket.getsockname()

    @property
    def url(self) -> str:
        return address(self._socket)

    @property
    def login_url(self) -> str:
        """The address to open: `url`, with the access token where the server has one."""
        return address(self._socket, self.token)

    def serve_forever(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._stopped.set()

    def shutdown(self, timeout: float = 30) -> None:
        """Stop serving (from another thread) and wait until `serve_forever` has returned."""
        self._server.should_exit = True
        if self._server.started:
            self._stopped.wait(timeout)

    def server_close(self) -> None:
        self._socket.close()
        self.explorer.close()


def address(sock: socket.socket, token: str | None = None) -> str:
    """The explorer's address on a bound socket (with ``?token=`` when it has one)."""
    host, port = sock.getsockname()[:2]
    base = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    return base + (f"?token={token}" if token is not None else "")


def _bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, int(port)), family=family, reuse_port=False, backlog=128)
    except OSError as err:
        raise LatentcatError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.set_inheritable(True)
    return sock


def make_server(catalog, host: str = "127.0.0.1", port: int = 8765, stage=None,
                max_upload: int = MAX_UPLOAD_BYTES, quiet: bool = True, timeout: float = SERVE_TIMEOUT,
                answers=None, token: str | None = None) -> ExplorerServer:
    """The explorer of ``catalog`` (opened read-only) on ``host:port`` (port 0: a free one),
    not yet serving. ``timeout``: seconds a page's query (a neighbour filter) may run before
    it is stopped; ``answers``: a discovery answers file to resume from and save to after every
    answer; ``token``: the access token every request must carry, made at random when ``host``
    is not a loopback address and none is given."""
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
    explorer = Explorer(catalog, stage=stage, max_upload=max_upload, timeout=timeout, answers=answers)
    try:
        return ExplorerServer(explorer, _bind(host, port), token, quiet=quiet)
    except BaseException:
        explorer.close()
        raise


def app_from_environment() -> Starlette:
    """The application of one worker process of `serve` (its settings in `SETTINGS_ENV`)."""
    settings = json.loads(os.environ[SETTINGS_ENV])
    explorer = Explorer(settings["catalog"], stage=settings["stage"], max_upload=settings["max_upload"],
                        timeout=settings["timeout"], answers=settings["answers"], sessions_dir=settings["sessions"])
    return create_app(explorer, token=settings["token"], loopback_only=settings["loopback_only"])


def serve(catalog, host: str = "127.0.0.1", port: int = 8765, stage=None, max_upload: int = MAX_UPLOAD_BYTES,
          quiet: bool = False, announce=print, timeout: float = SERVE_TIMEOUT, answers=None,
          token: str | None = None, workers: int = 1) -> None:
    """Serve the explorer until interrupted (Ctrl-C); see `make_server`. ``workers`` > 1:
    that many processes (uvicorn's supervisor), each with the catalogue open read-only."""
    if workers <= 1:
        server = make_server(catalog, host, port, stage=stage, max_upload=max_upload, quiet=quiet, timeout=timeout,
                             answers=answers, token=token)
        announce(f"latentcat explorer of {server.explorer.cat.path} at {server.login_url} (Ctrl-C stops it)")
        try:
            server.serve_forever()
        finally:
            server.server_close()
        return
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    import latentcat

    latentcat.open(catalog).close()  # a catalogue that cannot be opened stops the start, in one line
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
    sessions = tempfile.mkdtemp(prefix="latentcat-sessions-")
    os.environ[SETTINGS_ENV] = json.dumps({
        "catalog": str(Path(catalog).resolve()), "stage": None if stage is None else str(Path(stage).resolve()),
        "max_upload": int(max_upload), "timeout": float(timeout), "token": token, "sessions": sessions,
        "answers": None if answers is None else str(Path(answers).resolve()), "loopback_only": is_loopback(host)})
    sock = _bind(host, port)
    config = uvicorn.Config("latentcat.serve.web:app_from_environment", factory=True, workers=int(workers),
                            lifespan="off", access_log=not quiet, log_level="warning" if quiet else "info")
    announce(f"latentcat explorer of {Path(catalog)} at {address(sock, token)} ({workers} processes; Ctrl-C stops it)")
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()
        shutil.rmtree(sessions, ignore_errors=True)
