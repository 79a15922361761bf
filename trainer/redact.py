"""What may be printed of a URL: scheme, host and path. The query string (a signed URL's
signature) and userinfo (a connection string's password) are credentials and never shown."""

from __future__ import annotations

from urllib.parse import urlsplit


def redact_url(url: str) -> str:
    """`url` without userinfo, query string or fragment; text that is not a URL comes back as it is."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def redact_text(text: str, urls) -> str:
    """`text` with every one of `urls` (the full, secret-bearing form) replaced by its redacted form."""
    for url in sorted((u for u in urls if u), key=len, reverse=True):  # longest first: one may contain another
        text = text.replace(url, redact_url(url))
    return text
