"""An HTTP server on loopback for fault injection: real sockets and a real client, each request
answered by the test's own ``do_post(handler)`` on a thread of its own. What differs between the
tests (a healthy reply, an error status, a hang, a trickle, a proxy) is that function; the start,
the quiet log, a client that gives up mid-reply and the stop are here."""

import http.server
import threading
from collections.abc import Callable

PostHandler = Callable[[http.server.BaseHTTPRequestHandler], None]


def read_body(handler: http.server.BaseHTTPRequestHandler) -> bytes:
    return handler.rfile.read(int(handler.headers["Content-Length"]))


def respond(
    handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes = b"", send_body: bool = True
) -> None:
    """A JSON reply's status and headers, and its body unless ``send_body`` is false (the caller
    then writes it, e.g. a byte at a time)."""
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if send_body and body:
        handler.wfile.write(body)


class LoopbackServer:
    """Serves POSTs on 127.0.0.1 at a free port (``url``) until ``close()``; ``stopping`` is set
    when it closes, so a handler that waits (a hang, a trickle) can wait on it and end at once."""

    def __init__(self, do_post: PostHandler):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                do_post(self)

            def handle(self):
                try:
                    super().handle()
                except (OSError, ValueError):  # the client gave up on a hang or a trickle, or a reset
                    pass

            def finish(self):
                try:
                    super().finish()
                except (OSError, ValueError):
                    pass

            def log_message(self, *args):
                pass

        self.stopping = threading.Event()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "LoopbackServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
