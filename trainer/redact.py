"""What may be printed of a URL: a signed URL's query string (its signature) and a URL's userinfo
(user:password@) are credentials, so every URL the image prints goes through `redact_url`."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """`url` without its query string, fragment and userinfo: scheme://host[:port]/path. Text that
    is not a URL (a local path) comes back as it is."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # a malformed URL (a bad port, say): show nothing that might be secret
        return "<unparsable URL>"
    if not parts.scheme or not parts.netloc:
        return url
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact_text(text: str, urls) -> str:
    """`text` with every one of `urls` (the full, secret-bearing form) replaced by its redacted form."""
    for url in sorted((u for u in urls if u), key=len, reverse=True):  # longest first: one may contain another
        text = text.replace(url, redact_url(url))
    return text
