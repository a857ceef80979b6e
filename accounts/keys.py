"""API key format: ``upl_wk_<key_id>_<secret>`` (write) or ``upl_sk_<key_id>_<secret>`` (secret).

The key id is a public lookup handle; only an HMAC of the secret part is stored, and it is
compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from django.conf import settings

KIND_TAGS = {"write": "wk", "secret": "sk"}
_KEY_RE = re.compile(r"^upl_(wk|sk)_([a-z0-9]{12})_([A-Za-z0-9]{32})$")


@dataclass(frozen=True)
class ParsedKey:
    kind: str
    key_id: str
    secret: str


def generate(kind: str) -> tuple[str, ParsedKey]:
    """A new random key of `kind`; returns the full text and its parts."""
    key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
    secret = "".join(
        secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") for _ in range(32)
    )
    return f"upl_{KIND_TAGS[kind]}_{key_id}_{secret}", ParsedKey(kind=kind, key_id=key_id, secret=secret)


def parse(raw: str) -> ParsedKey | None:
    """Split a presented key into its parts, or None when it is not shaped like one of ours."""
    match = _KEY_RE.match(raw.strip())
    if not match:
        return None
    tag, key_id, secret = match.groups()
    kind = "write" if tag == "wk" else "secret"
    return ParsedKey(kind=kind, key_id=key_id, secret=secret)


def hash_secret(secret: str) -> str:
    # Keys are 190 bits of randomness, so a keyed fast hash is enough (no password stretching).
    return hmac.new(settings.SECRET_KEY.encode(), secret.encode(), hashlib.sha256).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
