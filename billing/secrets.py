"""Encryption at rest of workspaces' Stripe secrets (MultiFernet: the first key encrypts, all decrypt)."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


def _fernet() -> MultiFernet:
    keys = list(settings.UPLIFT_ENCRYPTION_KEYS)
    if not keys:
        # Development fallback only: production sets UPLIFT_ENCRYPTION_KEYS (see docs/billing.md).
        keys = [base64.urlsafe_b64encode(hashlib.sha256(settings.SECRET_KEY.encode()).digest()).decode()]
    return MultiFernet([Fernet(key) for key in keys])


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ValueError("secret cannot be decrypted with the configured keys") from exc


def rotate(token: str) -> str:
    """Re-encrypt with the newest key (after adding one in front of UPLIFT_ENCRYPTION_KEYS)."""
    return _fernet().rotate(token.encode()).decode()


def mask(secret: str) -> str:
    """E.g. rk_live_…a1b2: enough to recognise a key, never enough to use it."""
    prefix = secret.rsplit("_", 1)[0] + "_" if "_" in secret else ""
    return f"{prefix}…{secret[-4:]}"
