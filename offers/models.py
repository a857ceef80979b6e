"""What and how: deliveries of opportunities over email and in-app prompts."""

from __future__ import annotations

from django.db import models

from accounts.tenancy import TenantModel
from triggers.models import OpportunityStep


class Delivery(TenantModel):
    """The message for one opportunity step (stage and channel); one per step makes sends idempotent."""

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

    step = models.OneToOneField(OpportunityStep, on_delete=models.CASCADE, related_name="delivery")
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
        indexes = [models.Index(fields=["workspace", "status", "created_at"])]

    def __str__(self) -> str:
        return f"delivery of step {self.step_id} ({self.status})"
