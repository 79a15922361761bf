"""Real loopback HTTP servers for the tests: `LoopbackServer` (a handler class served on a free
port from a daemon thread) and `FileServer` (files by path, with the failures a download meets).
The platform's routes (tests/platform_double.py) and the PostgREST double's `serve()`
(tests/postgrest_double.py) are served through LoopbackServer too."""

from __future__ import annotations

import http.server
import threading

#: A 403 as Supabase Storage answers an expired signed URL.
EXPIRED = b'{"statusCode":"403","error":"InvalidJWT","message":"jwt expired"}'


class LoopbackServer:
    """`handler` (a BaseHTTPRequestHandler class) on 127.0.0.1, a free port, one thread per request."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()  # a client still pointed here is refused, never left waiting


class FileServer(LoopbackServer):
    """Serves `files` by path (the query ignored: a signed URL's token), recording every request's
    path with its query in `hits`. `gzip_encoded` paths are sent with Content-Encoding: gzip (their
    bytes as given); `refuse` paths answer 403 like an expired signed storage URL; `fail_first`
    (path → n, settable at any time) answers a path's next n requests 503. Unknown paths: 404.
    `canary` is what `signed()` plants (a suite's secret that must never be printed)."""

    def __init__(self, files: dict[str, bytes], *, gzip_encoded: set[str] = frozenset(),
                 refuse: set[str] = frozenset(), canary: str = "CANARY"):
        self.files, self.hits, self.fail_first, self.canary = files, [], {}, canary
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 — the stdlib's name
                path = self.path.split("?")[0]
                outer.hits.append(self.path)
                failures = outer.fail_first.get(path, 0)
                if failures:
                    outer.fail_first[path] = failures - 1
                    body = b""
                    self.send_response(503)
                elif path in refuse:
                    body = EXPIRED
                    self.send_response(403)
                elif path in outer.files:
                    body = outer.files[path]
                    self.send_response(200)
                    if path in gzip_encoded:
                        self.send_header("Content-Encoding", "gzip")
                else:
                    body = b"not found"
                    self.send_response(404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                return None  # keep the test output clean

        super().__init__(Handler)

    def signed(self, path: str) -> str:
        """A signed-looking URL of `path`: a token in the query and userinfo, both the `canary`."""
        return f"{self.url.replace('://', f'://user:{self.canary}@')}{path}?token={self.canary}-signature"


class HubRefusals(LoopbackServer):
    """The Hugging Face Hub as it answers a model it will not serve: a repository under `gated/`
    answers 403 with `X-Error-Code: GatedRepo`, any other 401 with `X-Error-Code: RepoNotFound`
    (the Hub answers an unknown or private repository so to an anonymous caller)."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self):
                gated = self.path.startswith("/gated/")
                self.send_response(403 if gated else 401)
                self.send_header("X-Error-Code", "GatedRepo" if gated else "RepoNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_HEAD = answer  # noqa: N815 — the stdlib's names

            def log_message(self, *args):
                return None

        super().__init__(Handler)
