"""``transcoders serve``: the local web viewer, on the standard library's threaded HTTP server.

Safe by default: it binds 127.0.0.1; any other host needs an access token (generated and printed unless given),
sent once as ``?token=`` (which sets an HttpOnly cookie) or as ``Authorization: Bearer``. Every page and asset
is served from the package (no CDN; a Content-Security-Policy of ``'self'`` keeps the browser from asking any
other host). Request paths are resolved under the runs folder and refused if they would leave it. Malformed
requests get a 4xx JSON error; an unexpected failure gets a 500 and the server goes on.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import mimetypes
import secrets
import sys
import threading
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ..errors import TranscodersError
from . import data as D

STATIC = Path(__file__).resolve().parent / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
MAX_BODY = 1 << 20


class ViewerError(TranscodersError):
    """A refused server setting (e.g. a non-loopback host without a token)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Handler(BaseHTTPRequestHandler):
    server_version = "transcoders-viewer"
    server: ViewerServer

    # ---- plumbing
    def log_message(self, fmt, *args):  # quiet unless asked
        if getattr(self.server, "verbose", False):
            super().log_message(fmt, *args)

    def _send(self, status: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json; charset=utf-8")

    def _error(self, status: int, message: str) -> None:
        self._json({"error": message}, status)

    def _authorised(self, query: dict) -> bool:
        if not self.server.token:
            return True
        want = self.server.token
        got = self.headers.get("Authorization", "")
        if got.startswith("Bearer ") and hmac.compare_digest(got[7:].strip(), want):
            return True
        cookie = SimpleCookie(self.headers.get("Cookie", ""))
        if "tc_token" in cookie and hmac.compare_digest(cookie["tc_token"].value, want):
            return True
        return False

    def _body(self) -> dict:
        try:
            n = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise D.BadRequest("bad Content-Length") from None
        if n > MAX_BODY:
            raise D.BadRequest("request body too large", 413)
        raw = self.rfile.read(n) if n > 0 else b""
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            raise D.BadRequest("the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise D.BadRequest("the request body must be a JSON object")
        return body

    # ---- dispatch
    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        try:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            if method == "GET" and url.path == "/" and self.server.token and "token" in query:
                if hmac.compare_digest(query["token"], self.server.token):
                    return self._send(303, b"", "text/plain", {
                        "Location": "/", "Set-Cookie": f"tc_token={self.server.token}; HttpOnly; SameSite=Strict; Path=/"})
            if not self._authorised(query):
                return self._error(401, "this viewer needs its access token: open the URL it printed (…/?token=…)")
            root = self.server.root
            if method == "POST" and url.path == "/api/graph/compute":  # long: outside the data lock
                return self._json(D.compute_graph(root, self._body()))
            if url.path.startswith("/api/"):
                with self.server.work:  # one data request at a time: see ViewerServer
                    return self._api(method, url, query, root)
            if method == "GET":
                if url.path in ("/", "/index.html"):
                    return self._static("index.html")
                if url.path.startswith("/static/"):
                    return self._static(url.path[len("/static/"):])
            return self._error(404, f"no such page: {method} {url.path}")
        except D.BadRequest as e:
            return self._error(e.status, str(e))
        except (BrokenPipeError, ConnectionResetError):
            return None
        except Exception as e:  # a bug: answer 500, keep serving
            print(f"viewer: {type(e).__name__}: {e}", file=sys.stderr)
            try:
                return self._error(500, f"internal error: {type(e).__name__}")
            except OSError:
                return None

    def _api(self, method: str, url, query: dict, root: Path) -> None:
        """The JSON API (and run-folder plots)."""
        if method == "GET":
            if url.path == "/api/runs":
                return self._json(D.list_runs(root))
            if url.path == "/api/run":
                return self._json(D.run_detail(root, query.get("run", "")))
            if url.path == "/api/feature":
                return self._json(D.feature_page(root, query.get("run", ""), query.get("id")))
            if url.path == "/api/feature/brief":
                return self._json(D.feature_brief(root, query.get("run", ""), query.get("id")))
            if url.path == "/api/random":
                return self._json(D.random_feature(root, query.get("run", "")))
            if url.path == "/api/search":
                return self._json(D.search(root, query.get("run", ""), query.get("q", "")))
            if url.path == "/api/graph":
                return self._json(D.graph(root, query.get("path", "")))
            if url.path == "/api/features/build":
                return self._json(D.build_status(root, query.get("set", "")))
            if url.path == "/api/rating":
                return self._json(D.rating_item(root, query.get("session", "")))
            if url.path == "/api/ratings":
                return self._json({"sessions": D.list_ratings(root)})
            if url.path == "/api/file":
                return self._file(query.get("path", ""))
        else:
            body = self._body()
            if url.path == "/api/label":
                return self._json(D.set_label(root, body))
            if url.path == "/api/features/build":
                return self._json(D.build_features(root, body))
            if url.path == "/api/graph/view":
                return self._json(D.save_graph_view(root, body))
            if url.path == "/api/activate":
                return self._json(D.activate_text(root, body))
            if url.path == "/api/concepts":
                return self._json(D.compute_concepts(root, body))
            if url.path == "/api/rating/start":
                return self._json(D.start_rating(root, body))
            if url.path == "/api/rating/answer":
                return self._json(D.rating_answer(root, D._field(body, "session", str), body))
        return self._error(404, f"no such page: {method} {url.path}")

    def _static(self, name: str) -> None:
        path = (STATIC / name).resolve()
        if STATIC not in path.parents or not path.is_file():
            return self._error(404, f"no such asset: {name}")
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype.endswith("javascript"):
            ctype += "; charset=utf-8"
        self._send(200, path.read_bytes(), ctype)

    def _file(self, rel: str) -> None:
        """Plots in the runs folder (sweep Pareto plots)."""
        path = D.resolve(self.server.root, rel)
        if path.suffix.lower() not in (".png", ".svg") or not path.is_file():
            raise D.BadRequest(f"{rel!r} is not an image in the runs folder", 404)
        self._send(200, path.read_bytes(), "image/png" if path.suffix.lower() == ".png" else "image/svg+xml")


class ViewerServer(ThreadingHTTPServer):
    """Threads accept and answer connections concurrently, but data requests run one at a time (``work``): they
    are short (milliseconds of SQLite and Python), and under 20 concurrent clients one at a time measured 3.6x the
    throughput of letting them contend for the GIL and SQLite's locks (bench/viewer_load.py)."""

    daemon_threads = True

    def __init__(self, root: Path, host: str, port: int, token: str | None, verbose: bool = False):
        self.root, self.token, self.verbose = root, token, verbose
        self.work = threading.Lock()
        super().__init__((host, port), Handler)


def make_server(runs_dir: str | Path = "runs", host: str = "127.0.0.1", port: int = 8041, token: str | None = None,
                verbose: bool = False) -> ViewerServer:
    """A ready (not yet serving) viewer. A non-loopback ``host`` needs ``token`` (use :func:`new_token`)."""
    root = Path(runs_dir).expanduser().resolve()
    if not root.is_dir():
        raise ViewerError(f"runs folder {runs_dir} does not exist: give the folder that holds your runs")
    if not is_loopback(host) and not token:
        raise ViewerError(f"--host {host} is reachable from other machines: it needs an access token "
                          "(--token TOKEN, or --token auto to generate one)")
    try:
        return ViewerServer(root, host, port, token, verbose)
    except OSError as e:
        raise ViewerError(f"cannot listen on {host}:{port} ({e.strerror}): pick another --port") from None


def new_token() -> str:
    return secrets.token_urlsafe(24)


def serve_in_thread(server: ViewerServer) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    return t
