"""Data from where a pod gets it: a local path, or an https URL (a signed storage URL, say)
downloaded once onto the volume, with retries and a size check, and reused on restart."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

CHUNK = 1 << 20


class DownloadError(Exception):
    """A download failed for good; the message never holds the URL's query (it may be a token)."""


def is_url(path: str) -> bool:
    return path.startswith(("https://", "http://"))


def public_name(url: str) -> str:
    """What may be logged of a URL: host and path, never the query string."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class _Transient(Exception):
    pass


def local_path(path_or_url: str, output_dir: Path) -> Path:
    """A local file for `path_or_url`: the path itself, or the URL's download under
    OUTPUT_DIR/downloads (fetched once; a restarted pod reuses it)."""
    if not is_url(path_or_url):
        return Path(path_or_url)
    parts = urlsplit(path_or_url)
    # Keyed by host and path, not the query: a re-signed URL for the same object is the same file.
    key = hashlib.sha256(f"{parts.netloc}{parts.path}".encode()).hexdigest()[:12]
    target = Path(output_dir) / "downloads" / f"{key}-{Path(parts.path).name or 'data'}"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        _download(path_or_url, target)
    except _Transient as e:
        raise DownloadError(f"{public_name(path_or_url)}: {e}, after 5 attempts") from None
    return target


@retry(
    retry=retry_if_exception_type(_Transient),
    stop=stop_after_attempt(5),
    wait=wait_exponential_jitter(initial=1, max=20),
    reraise=True,
)
def _download(url: str, target: Path) -> None:
    partial = target.with_name(target.name + ".partial")
    try:
        with httpx.stream("GET", url, timeout=60, follow_redirects=True) as response:
            if response.status_code >= 500 or response.status_code in (408, 429):
                raise _Transient(f"HTTP {response.status_code}")
            if response.status_code != 200:
                raise DownloadError(f"{public_name(url)}: HTTP {response.status_code}")
            expected = response.headers.get("content-length")
            size = 0
            with open(partial, "wb") as f:
                for chunk in response.iter_bytes(CHUNK):
                    f.write(chunk)
                    size += len(chunk)
        if expected is not None and size != int(expected):
            raise _Transient(f"got {size} bytes of {expected}")
    except httpx.TransportError as e:
        raise _Transient(f"{type(e).__name__}") from None
    os.replace(partial, target)  # atomic: a half download is never taken for a whole one
