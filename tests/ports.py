"""Loopback ports for the tests: a free one to listen on, and URLs nothing answers."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback port free a moment ago: for a server to listen on, or, left unused, one that refuses."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refused_url(path: str = "") -> str:
    """A loopback URL nothing listens on (the port was free a moment ago)."""
    return f"http://127.0.0.1:{free_port()}{path}"
