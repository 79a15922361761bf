"""What may be printed: the one place that hides URLs' credentials and secrets' values.

- A URL's query string (a signed URL's signature) and userinfo (user:password@) are credentials:
  every URL the image prints goes through `redact_url` (or `redact_text` for the URLs in a text).
- A secret's value (a key, a token, a database URL and its password) is replaced by a name in any
  text that may be printed or stored (an exception's message, a server's answer may quote one):
  `hide` for the secrets a caller holds, `scrub` for every secret variable of the environment.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit, urlunsplit

from trainer.config.environment import VARIABLES

HIDDEN = "<hidden>"


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


def _password(secret: str) -> str | None:
    """A URL's password as written, also when it holds an unencoded `@` (urlsplit would cut the
    userinfo at the last `@`, libpq at the first: a host like 'CANARY…@127.0.0.1' in its error)."""
    if "://" not in secret:
        return None
    netloc = secret.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
    userinfo = netloc.rpartition("@")[0]
    if ":" not in userinfo:
        return None
    return userinfo.split(":", 1)[1] or None


def _forms(secret: str) -> list[str]:
    """A secret, its surrounding-whitespace-free and escaped forms (a library's error may show the
    bytes' repr: `b'Bearer key\\n'`) and, for a URL, its password as written, decoded and each part
    of it around an unencoded `@` (libpq never prints a password; a malformed URL's host might)."""
    forms = [secret, secret.strip(), secret.encode("unicode_escape").decode("ascii")]
    password = _password(secret)
    if password:
        forms += [password, unquote(password)]
        forms += [part for part in password.split("@") if len(part) >= 4]
    # The longest first: a form inside another must not leave the rest of the other behind.
    return sorted({f for f in forms if f}, key=len, reverse=True)


def hide(text: str, *secrets: str | None, name: str = HIDDEN) -> str:
    """`text` with each of `secrets` (and a URL's password) replaced by `name`."""
    for secret in secrets:
        for form in _forms(secret) if secret else ():
            text = text.replace(form, name)
    return text


def scrub(text: str) -> str:
    """`text` without the value of any secret variable of the environment (`<NAME>` instead)."""
    for name, (_what, _mode, secret) in VARIABLES.items():
        value = os.environ.get(name) if secret else None
        if value and len(value) >= 4:  # the whole value: a short one would hide ordinary words
            text = text.replace(value, f"<{name}>")
    return text
