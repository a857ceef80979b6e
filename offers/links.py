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


# Recipient links (unsubscribe, preferences, open pixel) never expire: RFC 8058 one-click must keep
# working for as long as the message sits in an inbox. They name only ids and carry no power over money.
RECIPIENT_SALT = "uplift.offers.recipient"
OPEN_SALT = "uplift.offers.open"


def contact_token(*, workspace_id: int, contact_id: int) -> str:
    return signing.dumps({"w": workspace_id, "c": contact_id}, salt=RECIPIENT_SALT, compress=False)


def contact_from_token(token: str) -> tuple[int, int]:
    """(workspace id, contact id) a recipient token names; raises LinkInvalid."""
    try:
        data = signing.loads(token, salt=RECIPIENT_SALT)
    except signing.BadSignature as exc:
        raise LinkInvalid from exc
    if not isinstance(data, dict) or not isinstance(data.get("w"), int) or not isinstance(data.get("c"), int):
        raise LinkInvalid
    return int(data["w"]), int(data["c"])


def unsubscribe_url(*, workspace_id: int, contact_id: int) -> str:
    token = contact_token(workspace_id=workspace_id, contact_id=contact_id)
    return settings.PUBLIC_BASE_URL + reverse("offers:unsubscribe", args=[token])


def preferences_url(*, workspace_id: int, contact_id: int) -> str:
    token = contact_token(workspace_id=workspace_id, contact_id=contact_id)
    return settings.PUBLIC_BASE_URL + reverse("offers:preferences", args=[token])


def open_pixel_url(*, workspace_id: int, delivery_id: int) -> str:
    token = signing.dumps({"w": workspace_id, "d": delivery_id}, salt=OPEN_SALT, compress=False)
    return settings.PUBLIC_BASE_URL + reverse("offers:open-pixel", args=[token])


def delivery_from_open_token(token: str) -> tuple[int, int]:
    """(workspace id, delivery id) of an open-pixel token; raises LinkInvalid."""
    try:
        data = signing.loads(token, salt=OPEN_SALT)
    except signing.BadSignature as exc:
        raise LinkInvalid from exc
    if not isinstance(data, dict) or not isinstance(data.get("w"), int) or not isinstance(data.get("d"), int):
        raise LinkInvalid
    return int(data["w"]), int(data["d"])
