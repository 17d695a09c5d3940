"""Networking helpers shared by the tests."""

import socket
import threading
import time
from contextlib import contextmanager


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (tests never take the default 8000: others may use it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def uvicorn_in_thread(app, timeout_s: float = 30):
    """Serve an ASGI app with a real uvicorn server on a free port in a daemon thread; yields its
    base URL (http://127.0.0.1:PORT) and stops the server on exit."""
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
