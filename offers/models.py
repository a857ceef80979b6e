"""What and how: deliveries of opportunities over email and in-app prompts."""

from __future__ import annotations

from django.db import models

from accounts.models import Contact
from accounts.tenancy import TenantModel
from triggers.models import Opportunity


class Delivery(TenantModel):
    """One message for one opportunity on one channel; the unique key makes sends idempotent."""

    class Channel(models.TextChoices):
        EMAIL = "email"
        IN_APP = "in_app"

    class Status(models.TextChoices):
        PENDING = "pending"  # created, not yet sent / not yet visible
        SENDING = "sending"  # an email worker holds it
        SENT = "sent"  # email accepted by the SMTP server / prompt visible
        SHOWN = "shown"
        CLICKED = "clicked"
        DISMISSED = "dismissed"
        ACCEPTED = "accepted"
        SUPPRESSED = "suppressed"
        FAILED = "failed"

    opportunity = models.ForeignKey(Opportunity, on_delete=models.CASCADE, related_name="deliveries")
    contact = models.ForeignKey(Contact, null=True, on_delete=models.SET_NULL, related_name="deliveries")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    subject = models.CharField(max_length=255, blank=True)
    body_text = models.TextField(blank=True)
    suppressed_reason = models.CharField(max_length=255, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField()
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    clicked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "opportunity", "channel"], name="one_delivery_per_channel"),
        ]
        indexes = [models.Index(fields=["workspace", "contact", "channel", "status"])]
