"""What may be printed of a URL: a signed URL's query string (its signature) and a URL's userinfo
(user:password@) are credentials, so every URL the image prints goes through `redact_url`."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """`url` without its query string, fragment and userinfo: scheme://host[:port]/path."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # a malformed URL (a bad port, say): show nothing that might be secret
        return "<unparsable URL>"
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
