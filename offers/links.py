"""Signed, expiring links carried in emails and prompts. The signature is the credential."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.urls import reverse

UPGRADE_SALT = "uplift.offers.upgrade"


class LinkInvalid(Exception):
    """The link was tampered with or is not one of ours."""


class LinkExpired(Exception):
    """The link was genuine but is too old."""


def upgrade_token(delivery_id: int) -> str:
    return signing.TimestampSigner(salt=UPGRADE_SALT).sign_object({"d": delivery_id}, compress=False)


def upgrade_url(delivery_id: int) -> str:
    return settings.PUBLIC_BASE_URL + reverse("offers:upgrade", args=[upgrade_token(delivery_id)])


def delivery_id_from_token(token: str, max_age: timedelta | None = None) -> int:
    """The delivery id a token names; raises LinkExpired or LinkInvalid."""
    try:
        data = signing.TimestampSigner(salt=UPGRADE_SALT).unsign_object(
            token, max_age=max_age or settings.UPGRADE_LINK_MAX_AGE
        )
    except signing.SignatureExpired as exc:
        raise LinkExpired from exc
    except signing.BadSignature as exc:
        raise LinkInvalid from exc
    if not isinstance(data, dict) or not isinstance(data.get("d"), int):
        raise LinkInvalid
    return int(data["d"])
