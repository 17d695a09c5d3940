"""Networking helpers shared by the tests."""

import socket


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (tests never take the default 8000: others may use it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
