"""Use cases of offer delivery: deliver a due step, send email, serve prompts, accept an upgrade."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.db.models import F

from accounts import email_headers
from accounts.models import Contact, Workspace
from billing.models import Subscription
from billing.queries import current_subscription
from billing.services import change_plan
from offers import links, rendering
from offers.models import Delivery
from triggers.models import Meter, MeterDefinition, Opportunity, OpportunityStep

# An email worker that claimed a delivery and vanished is presumed dead after this long.
SEND_LEASE = timedelta(minutes=5)


def message_values(*, opportunity: Opportunity, contact: Contact | None, delivery_id: int | None) -> dict[str, object]:
    """Every value a template may name, computed from the workspace's real data."""
    rule = opportunity.rule
    definition = MeterDefinition.objects.filter(key=rule.meter_key).first()
    meter = (
        Meter.objects.filter(customer_id=opportunity.customer_id, key=rule.meter_key).order_by("-updated_at").first()
    )
    current, target = opportunity.current_plan, opportunity.target_plan
    limit = current.limit_for(rule.meter_key) if current else None
    value = meter.value if meter else Decimal(0)
    workspace = Workspace.objects.get(pk=opportunity.workspace_id)
    return {
        "first_name": contact.first_name if contact else "there",
        "percent": int(value * 100 // limit) if limit else 0,
        "value": f"{int(value):,}",
        "limit": f"{limit:,}" if limit else "",
        "resource": definition.label if definition else rule.meter_key,
        "product_name": workspace.name,
        "current_plan": current.name if current else "",
        "target_plan": target.name if target else "",
        "target_features": list(target.features) if target else [],
        "target_price": rendering.money(target.monthly_amount_cents) if target else "",
        "price_difference": rendering.money(opportunity.estimated_uplift_cents),
        "upgrade_url": links.upgrade_url(delivery_id) if delivery_id else "",
        "sender_name": f"The {workspace.name} team",
    }


def deliver_step(*, step_id: int, now: datetime) -> list[int]:
    """Create the delivery of a due step once; returns the email deliveries to send."""
    with transaction.atomic():
        step = (
            OpportunityStep.objects.select_for_update(of=("self",))
            .select_related("opportunity__rule", "contact")
            .get(pk=step_id)
        )
        if step.status != OpportunityStep.Status.DUE:
            return []
        opportunity = step.opportunity
        delivery = Delivery.objects.create(workspace_id=step.workspace_id, step=step, created_at=now)
        values = message_values(opportunity=opportunity, contact=step.contact, delivery_id=delivery.pk)
        to_send: list[int] = []
        if step.channel == OpportunityStep.Channel.EMAIL:
            email = rendering.render_usage_upsell_email(values)
            delivery.subject, delivery.body_text = email.subject, email.text
            to_send.append(delivery.pk)
        else:
            delivery.body_text = rendering.render_limit_prompt(values)
            delivery.status = Delivery.Status.SENT
            delivery.sent_at = now
        delivery.save()
        step.status = OpportunityStep.Status.DELIVERED
        step.save(update_fields=["status"])
        if opportunity.status == Opportunity.Status.OPEN:
            opportunity.status = Opportunity.Status.OFFERED
            opportunity.updated_at = now
            opportunity.save(update_fields=["status", "updated_at"])
    return to_send


def claim_email(*, delivery_id: int, now: datetime) -> bool:
    """Take the right to send a pending email (or one whose sender died); False if someone else has it."""
    return bool(
        Delivery.objects.filter(pk=delivery_id, step__channel=OpportunityStep.Channel.EMAIL)
        .filter(status=Delivery.Status.PENDING)
        .update(status=Delivery.Status.SENDING, claimed_at=now, attempts=F("attempts") + 1)
    ) or bool(
        Delivery.objects.filter(
            pk=delivery_id,
            step__channel=OpportunityStep.Channel.EMAIL,
            status=Delivery.Status.SENDING,
            claimed_at__lt=now - SEND_LEASE,
        ).update(claimed_at=now, attempts=F("attempts") + 1)
    )


def send_email(*, delivery_id: int, now: datetime) -> bool:
    """Send a claimed email delivery over SMTP and record it; True when this call sent it."""
    if not claim_email(delivery_id=delivery_id, now=now):
        return False
    delivery = Delivery.objects.select_related("step__opportunity__rule", "step__contact").get(pk=delivery_id)
    contact = delivery.step.contact
    assert contact is not None  # the engine suppresses steps without a contact
    if not email_headers.is_deliverable_address(contact.email):
        # A malformed or header-injecting address (it comes from ingested traits) can never be sent;
        # raising would release the claim and let the sweeper retry it forever.
        Delivery.objects.filter(pk=delivery_id).update(
            status=Delivery.Status.FAILED, suppressed_reason="invalid email address"
        )
        return False
    values = message_values(opportunity=delivery.step.opportunity, contact=contact, delivery_id=delivery.pk)
    email = rendering.render_usage_upsell_email(values)
    message = EmailMultiAlternatives(
        subject=email_headers.header_value(email.subject, max_length=998),
        body=email.text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[contact.email],
        headers={"Message-ID": f"<delivery-{delivery.pk}@uplift.localhost>"},
    )
    message.attach_alternative(email.html, "text/html")
    try:
        message.send()
    except Exception:
        # Release the claim so a retry can send it; the SMTP server did not accept it.
        Delivery.objects.filter(pk=delivery_id).update(status=Delivery.Status.PENDING, claimed_at=None)
        raise
    Delivery.objects.filter(pk=delivery_id).update(status=Delivery.Status.SENT, sent_at=now)
    return True


def pending_prompts(*, user_id: str) -> list[Delivery]:
    """The in-app prompts a contact should see now."""
    contact = Contact.objects.filter(external_id=user_id).first()
    if contact is None or contact.customer_id is None:
        return []
    return list(
        Delivery.objects.select_related("step__opportunity")
        .filter(
            step__channel=OpportunityStep.Channel.IN_APP,
            step__opportunity__customer_id=contact.customer_id,
            status__in=(Delivery.Status.SENT, Delivery.Status.SHOWN),
        )
        .order_by("-created_at")[:5]
    )


def accept_upgrade(*, delivery_id: int, now: datetime) -> tuple[bool, Subscription | None]:
    """Apply the offered plan change once; (False, None) when the link was already used."""
    with transaction.atomic():
        delivery = (
            Delivery.objects.select_for_update(of=("self",)).select_related("step__opportunity").get(pk=delivery_id)
        )
        opportunity = delivery.step.opportunity
        if delivery.status == Delivery.Status.ACCEPTED or opportunity.status == Opportunity.Status.ACCEPTED:
            return False, None
        subscription = current_subscription(opportunity.customer)
        if subscription is None or opportunity.target_plan is None:
            return False, None
        try:
            change_plan(subscription=subscription, plan=opportunity.target_plan, now=now)
        except IntegrityError:
            return False, None
        delivery.status = Delivery.Status.ACCEPTED
        delivery.save(update_fields=["status"])
        opportunity.status = Opportunity.Status.ACCEPTED
        opportunity.updated_at = now
        opportunity.save(update_fields=["status", "updated_at"])
        return True, subscription


def due_steps_without_delivery(*, older_than: datetime) -> list[tuple[int, int]]:
    """(workspace id, step id) of due steps whose delivery was never made, across all workspaces."""
    return list(
        OpportunityStep.all_workspaces.filter(status=OpportunityStep.Status.DUE, created_at__lt=older_than).values_list(
            "workspace_id", "id"
        )[:1000]
    )


def unsent_emails(*, older_than: datetime) -> list[tuple[int, int]]:
    """(workspace id, delivery id) of emails never sent or whose sender died, all workspaces."""
    return list(
        Delivery.all_workspaces.filter(step__channel=OpportunityStep.Channel.EMAIL, created_at__lt=older_than)
        .filter(status__in=(Delivery.Status.PENDING, Delivery.Status.SENDING))
        .values_list("workspace_id", "id")[:1000]
    )
