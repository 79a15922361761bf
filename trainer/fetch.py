"""Data from where a pod gets it: a local path, or an https URL (a signed storage URL, say)
downloaded once onto the volume, with retries and a size check, and reused on restart of the same
job (keyed by the job: another job on the volume downloads its own copy).

The file is stored as the server sent it: a `Content-Encoding: gzip` body stays compressed (its
Content-Length is the compressed size, so the size check compares like with like) and the reader
(trainer/data.py) decompresses any gzip by its magic bytes, whatever the URL's name says.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from trainer.redact import redact_url

CHUNK = 1 << 20
#: Why a server refuses a URL, in words a user can act on.
REFUSALS = {
    401: "the server refused the URL (401 unauthorized): its signature is missing or invalid; ask for a fresh URL",
    403: "the server refused the URL (403 forbidden): a signed URL that has expired, or one without access to "
         "this file; ask for a fresh signed URL",
    404: "not found (404): no file at this address",
    410: "gone (410): the file was removed",
}


class DownloadError(Exception):
    """A download failed for good; the message never holds the URL's query (it may be a token)."""


class DiskFull(DownloadError):
    """No space left on OUTPUT_DIR's device for a download (its partial file removed). Not the
    data's fault: the pod exits 74 and a restart tries again (trainer/pod/job.py)."""



def is_url(path: str) -> bool:
    return path.startswith(("https://", "http://"))


class _Transient(Exception):
    pass


def local_path(path_or_url: str, output_dir: Path, job_id: str) -> Path:
    """A local file for `path_or_url`: the path itself, or the URL's download under
    OUTPUT_DIR/downloads (fetched once; a restarted pod of the same job reuses it)."""
    if not is_url(path_or_url):
        return Path(path_or_url)
    parts = urlsplit(path_or_url)
    # Keyed by the job, host and path, not the query: a re-signed URL for the same object is the
    # same file for this job; another job's object at the same address may have other contents.
    key = hashlib.sha256(f"{job_id}\0{parts.netloc}{parts.path}".encode()).hexdigest()[:12]
    target = Path(output_dir) / "downloads" / f"{key}-{Path(parts.path).name or 'data'}"
    if target.exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DiskFull(f"{redact_url(path_or_url)}: cannot create {target.parent} ({e.strerror})") from None
        raise DownloadError(f"{redact_url(path_or_url)}: cannot create {target.parent} ({e.strerror})") from None
    try:
        _download(path_or_url, target)
    except _Transient as e:
        raise DownloadError(f"{redact_url(path_or_url)}: {e}, after 5 attempts") from None
    return target


@retry(
    retry=retry_if_exception_type(_Transient),
    stop=stop_after_attempt(5),
    wait=wait_exponential_jitter(initial=1, max=20),
    reraise=True,
)
def _download(url: str, target: Path) -> None:
    partial = target.with_name(target.name + ".partial")
    # Only encodings the reader can undo: gzip (by its magic bytes) or none.
    headers = {"Accept-Encoding": "gzip, identity"}
    try:
        with httpx.stream("GET", url, timeout=60, follow_redirects=True, headers=headers) as response:
            if response.status_code >= 500 or response.status_code in (408, 429):
                raise _Transient(f"HTTP {response.status_code}")
            if response.status_code != 200:
                reason = REFUSALS.get(response.status_code, f"HTTP {response.status_code}")
                raise DownloadError(f"{redact_url(url)}: {reason}")
            encoding = response.headers.get("content-encoding", "identity").lower()
            if encoding not in ("identity", "gzip", "x-gzip"):
                raise DownloadError(f"{redact_url(url)}: the server sent Content-Encoding {encoding!r}; "
                                    "accepted: gzip or none")
            expected = response.headers.get("content-length")
            size = 0
            with open(partial, "wb") as f:
                for chunk in response.iter_raw(CHUNK):  # as sent: the size check counts these bytes
                    f.write(chunk)
                    size += len(chunk)
        if expected is not None and size != int(expected):
            raise _Transient(f"got {size} bytes of {expected}")
    except httpx.TransportError as e:
        raise _Transient(f"{type(e).__name__}") from None
    except OSError as e:
        partial.unlink(missing_ok=True)  # a full disk keeps no half file: the job's state still fits
        error = DiskFull if e.errno == errno.ENOSPC else DownloadError
        raise error(f"{redact_url(url)}: cannot write {partial} ({e.strerror})") from None
    os.replace(partial, target)  # atomic: a half download is never taken for a whole one
