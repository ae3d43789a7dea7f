"""Run a test HTTP server on a free loopback port for the length of a `with` block."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from socketserver import BaseServer


@contextmanager
def serving(server: BaseServer) -> Iterator[str]:
    """Serve `server` (bound to 127.0.0.1, port 0) from a thread; yields its SCIM base URL (…/v2)."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v2"
    finally:
        server.shutdown()
        server.server_close()
