"""What a Supabase key is allowed to do, read from the key itself (never logged)."""

from __future__ import annotations

import base64
import json


def key_role(key: str) -> str | None:
    """The role a Supabase API key acts as: "service_role", "anon", … or None if unreadable.

    Legacy keys are JWTs whose payload carries a `role` claim (the signature is the server's
    business; we only read the claim to refuse the anon key before training starts). New-style
    keys carry their kind in a prefix: `sb_secret_` acts as service_role, `sb_publishable_` as anon.
    """
    if key.startswith("sb_secret_"):
        return "service_role"
    if key.startswith("sb_publishable_"):
        return "anon"
    parts = key.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, UnicodeDecodeError):
        return None
    role = claims.get("role") if isinstance(claims, dict) else None
    return role if isinstance(role, str) else None
