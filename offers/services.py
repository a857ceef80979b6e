"""Use cases of offers: templates, offers, experiments, delivering steps, sending email, recording outcomes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core import mail
from django.core.mail import EmailMultiAlternatives
from django.core.mail.backends.base import BaseEmailBackend
from django.db import IntegrityError, transaction
from django.db.models import F, Q

from accounts import email_headers
from accounts.models import Contact, Workspace
from billing.models import Plan, Subscription
from billing.queries import current_subscription
from billing.services import (
    Attribution,
    ChangeRequest,
    CouponTerms,
    UpgradeRequest,
    change_plan,
    open_upgrade_attempt,
    perform_upgrade,
    prepare_coupon,
    quote_change,
    stripe_connected,
    upgrade_already_applied,
)
from billing.stripe_gateway import Preview, StripeUnavailable
from offers import catalog, experiments, links, queries, rendering
from offers.models import Assignment, Delivery, DeliveryEvent, Experiment, MessageTemplate, Offer, Variant
from triggers import republish
from triggers.models import Opportunity, OpportunityStep, Rule
from triggers.services import record_step_outcome

logger = logging.getLogger(__name__)

# An email worker that claimed a delivery and vanished is presumed dead after this long.
logger = logging.getLogger(__name__)

SEND_LEASE = timedelta(minutes=5)


def ensure_seeded_templates(*, workspace_id: int, now: datetime) -> dict[str, MessageTemplate]:
    """Create the methodology's templates for a workspace once; returns all its templates by key."""
    existing = {t.key: t for t in MessageTemplate.objects.all()}
    for seed in catalog.SEEDS:
        if seed.key not in existing:
            template, _created = MessageTemplate.objects.get_or_create(
                workspace_id=workspace_id,
                key=seed.key,
                defaults={
                    "name": seed.name,
                    "channel": seed.channel,
                    "subject": seed.subject,
                    "body": seed.body,
                    "updated_at": now,
                },
            )
            existing[seed.key] = template
    return existing


def save_template(*, template: MessageTemplate, name: str, subject: str, body: str, now: datetime) -> MessageTemplate:
    """Change a template; raises rendering.TemplateProblem (and saves nothing) if it is malformed."""
    rendering.check_template(subject=subject, body=body)
    template.name, template.subject, template.body, template.updated_at = name, subject, body, now
    template.save(update_fields=["name", "subject", "body", "updated_at"])
    return template


def create_template(
    *, workspace: Workspace, key: str, name: str, channel: str, subject: str, body: str, now: datetime
) -> MessageTemplate:
    """Add a template; raises rendering.TemplateProblem if it is malformed."""
    rendering.check_template(subject=subject, body=body)
    return MessageTemplate.objects.create(
        workspace=workspace, key=key, name=name, channel=channel, subject=subject, body=body, updated_at=now
    )


def create_offer(
    *,
    workspace: Workspace,
    name: str,
    kind: str,
    now: datetime,
    rule: Rule | None = None,
    target_plan: Plan | None = None,
    framing: str = Offer.Framing.COMPARISON,
    benefit: str = "",
    hours_saved_per_month: int | None = None,
    hourly_value_cents: int | None = None,
    incentive: str = Offer.Incentive.NONE,
    discount_percent: int | None = None,
    discount_months: int = 1,
    discount_amount_cents: int | None = None,
    trial_days: int | None = None,
    incentive_ends_at: datetime | None = None,
    seats_to_add: int | None = None,
    email_template: MessageTemplate | None = None,
    prompt_template: MessageTemplate | None = None,
) -> Offer:
    """Add an offer to the workspace's catalog (at most one active offer per rule)."""
    return Offer.objects.create(
        workspace=workspace,
        name=name,
        kind=kind,
        rule=rule,
        target_plan=target_plan,
        framing=framing,
        benefit=benefit,
        hours_saved_per_month=hours_saved_per_month,
        hourly_value_cents=hourly_value_cents,
        incentive=incentive,
        discount_percent=discount_percent,
        discount_months=discount_months,
        discount_amount_cents=discount_amount_cents,
        trial_days=trial_days,
        incentive_ends_at=incentive_ends_at,
        seats_to_add=seats_to_add,
        email_template=email_template,
        prompt_template=prompt_template,
        created_at=now,
    )


@transaction.atomic
def create_experiment(
    *,
    offer: Offer,
    name: str,
    holdout_percent: Decimal | int,
    variants: list[tuple[str, int, MessageTemplate | None, MessageTemplate | None]],
    now: datetime,
) -> Experiment:
    """An experiment on an offer: variants (key, weight, email template, prompt template) and a holdout."""
    experiment = Experiment.objects.create(
        workspace_id=offer.workspace_id, offer=offer, name=name, holdout_percent=holdout_percent, created_at=now
    )
    for key, weight, email_template, prompt_template in variants:
        Variant.objects.create(
            workspace_id=offer.workspace_id,
            experiment=experiment,
            key=key,
            weight=weight,
            email_template=email_template,
            prompt_template=prompt_template,
        )
    return experiment


def assign_arm(*, experiment: Experiment, customer_id: int, now: datetime) -> str:
    """The customer's arm in the experiment: stored on first use, the same ever after."""
    stored = Assignment.objects.filter(experiment=experiment, customer_id=customer_id).first()
    if stored:
        return stored.arm
    arm = experiments.assign(
        workspace_id=experiment.workspace_id,
        experiment_id=experiment.pk,
        customer_id=customer_id,
        holdout_percent=float(experiment.holdout_percent),
        variants=list(experiment.variants.order_by("key").values_list("key", "weight")),
    )
    try:
        with transaction.atomic():
            Assignment.objects.create(
                workspace_id=experiment.workspace_id,
                experiment=experiment,
                customer_id=customer_id,
                arm=arm,
                assigned_at=now,
            )
    except IntegrityError:
        # Assigned concurrently; the stored arm wins.
        return Assignment.objects.get(experiment=experiment, customer_id=customer_id).arm
    return arm


def record_event(*, delivery: Delivery, kind: str, now: datetime) -> bool:
    """Record an outcome of a delivery once; False when it was recorded before."""
    try:
        with transaction.atomic():
            DeliveryEvent.objects.create(
                workspace_id=delivery.workspace_id, delivery=delivery, kind=kind, occurred_at=now
            )
    except IntegrityError:
        return False
    return True


def _template_for(
    *, step: OpportunityStep, offer: Offer | None, variant: Variant | None, templates: dict[str, MessageTemplate]
) -> MessageTemplate:
    email = step.channel == OpportunityStep.Channel.EMAIL
    if variant is not None:
        chosen = variant.email_template if email else variant.prompt_template
        if chosen is not None:
            return chosen
    if offer is not None:
        chosen = offer.email_template if email else offer.prompt_template
        if chosen is not None:
            return chosen
    email_key, prompt_key = catalog.DEFAULTS_BY_SIGNAL.get(step.opportunity.rule.kind, catalog.DEFAULT_OTHER_SIGNALS)
    return templates[email_key if email else prompt_key]


def _suppress(*, delivery: Delivery, status: str, reason: str, now: datetime) -> None:
    delivery.status, delivery.suppressed_reason = status, reason
    delivery.save(update_fields=["status", "suppressed_reason"])
    record_event(
        delivery=delivery,
        kind=DeliveryEvent.Kind.HOLDOUT if status == Delivery.Status.HOLDOUT else DeliveryEvent.Kind.SUPPRESSED,
        now=now,
    )


def deliver_step(*, step_id: int, now: datetime) -> list[int]:
    """Create the delivery of a due step once (content, offer, variant); returns the emails to send."""
    with transaction.atomic():
        step = (
            OpportunityStep.objects.select_for_update(of=("self",))
            .select_related("opportunity__rule", "opportunity__customer", "contact")
            .get(pk=step_id)
        )
        if step.status != OpportunityStep.Status.DUE:
            return []
        promised: int | None = None  # the delivery whose message promises an incentive
        opportunity = step.opportunity
        templates = ensure_seeded_templates(workspace_id=step.workspace_id, now=now)
        offer = Offer.objects.filter(is_active=True, rule=opportunity.rule).first()
        delivery = Delivery.objects.create(
            workspace_id=step.workspace_id,
            step=step,
            offer=offer,
            trigger=opportunity.rule.kind,
            created_at=now,
            # An email is published (offers.send_email) by the delivering task right after this.
            last_published_at=now,
            publishes=1,
        )
        step.status = OpportunityStep.Status.DELIVERED
        step.save(update_fields=["status"])
        experiment = offer.experiments.filter(is_active=True).first() if offer else None
        variant = None
        if experiment is not None:
            arm = assign_arm(experiment=experiment, customer_id=opportunity.customer_id, now=now)
            delivery.experiment, delivery.variant = experiment, arm
            delivery.save(update_fields=["experiment", "variant"])
            if arm == experiments.HOLDOUT:
                # The holdout receives nothing, so its conversion measures doing nothing.
                _suppress(delivery=delivery, status=Delivery.Status.HOLDOUT, reason="experiment holdout", now=now)
                return []
            variant = experiment.variants.get(key=arm)
        contact = step.contact
        if step.channel == OpportunityStep.Channel.EMAIL and contact is not None and contact.unsubscribed_at:
            _suppress(delivery=delivery, status=Delivery.Status.SUPPRESSED, reason="contact unsubscribed", now=now)
            return []
        template = _template_for(step=step, offer=offer, variant=variant, templates=templates)
        values = queries.message_values(
            opportunity=opportunity, contact=contact, delivery_id=delivery.pk, offer=offer, now=now
        )
        try:
            rendered = rendering.render_message(
                subject=template.subject, body=template.body, values=values, channel=step.channel
            )
        except rendering.TemplateProblem as exc:
            # Never send a half-filled message: record why, and the dashboard shows it.
            _suppress(delivery=delivery, status=Delivery.Status.FAILED, reason=str(exc)[:255], now=now)
            return []
        delivery.template = template
        delivery.subject, delivery.body_text, delivery.body_html = rendered.subject, rendered.text, rendered.html
        if offer is not None and queries.incentive_is_live(offer=offer, now=now):
            delivery.incentive = offer.incentive
            delivery.discount_percent = offer.discount_percent
            delivery.discount_months = offer.discount_months
            delivery.discount_amount_cents = offer.discount_amount_cents
            delivery.trial_days = offer.trial_days
            delivery.incentive_ends_at = offer.incentive_ends_at
            promised = delivery.pk
        to_send: list[int] = []
        if step.channel == OpportunityStep.Channel.EMAIL:
            to_send.append(delivery.pk)
        else:
            delivery.status = Delivery.Status.SENT
            delivery.sent_at = now
            record_event(delivery=delivery, kind=DeliveryEvent.Kind.SENT, now=now)
        delivery.save()
        if opportunity.status == Opportunity.Status.OPEN:
            opportunity.status = Opportunity.Status.OFFERED
            opportunity.updated_at = now
            opportunity.save(update_fields=["status", "updated_at"])
    if promised is not None:
        try:
            prepare_incentive(delivery_id=promised)
        except StripeUnavailable as exc:
            # Not fatal: the click creates the coupon and shows the customer the re-quoted price.
            logger.warning("offer coupon for delivery %s not created yet: %s", promised, exc)
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


def _close_quietly(smtp: BaseEmailBackend) -> None:
    try:
        smtp.close()
    except Exception:  # the message was accepted and recorded (or released); a failed QUIT changes nothing
        logger.info("closing the SMTP connection failed", exc_info=True)


def send_email(*, delivery_id: int, now: datetime) -> bool:
    """Send a claimed email delivery over SMTP and record it; True when this call sent it."""
    if not claim_email(delivery_id=delivery_id, now=now):
        return False
    delivery = Delivery.objects.select_related("step__contact").get(pk=delivery_id)
    contact = delivery.step.contact
    assert contact is not None  # the engine suppresses steps without a contact
    if not email_headers.is_deliverable_address(contact.email):
        # A malformed or header-injecting address (it comes from ingested traits) can never be sent;
        # raising would release the claim and let the sweeper retry it forever.
        _suppress(delivery=delivery, status=Delivery.Status.FAILED, reason="invalid email address", now=now)
        return False
    if contact.unsubscribed_at is not None:
        # Unsubscribed after the step was decided: the send-time check is the one that counts.
        _suppress(delivery=delivery, status=Delivery.Status.SUPPRESSED, reason="contact unsubscribed", now=now)
        return False
    unsubscribe = links.unsubscribe_url(workspace_id=delivery.workspace_id, contact_id=contact.pk)
    preferences = links.preferences_url(workspace_id=delivery.workspace_id, contact_id=contact.pk)
    pixel = links.open_pixel_url(workspace_id=delivery.workspace_id, delivery_id=delivery.pk)
    rendered = rendering.Rendered(subject=delivery.subject, text=delivery.body_text, html=delivery.body_html, links=())
    message = EmailMultiAlternatives(
        subject=email_headers.header_value(delivery.subject, max_length=998),
        body=rendering.email_text(rendered=rendered, unsubscribe_url=unsubscribe, preferences_url=preferences),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[contact.email],
        headers={
            # Deterministic, so a resend after a lost acknowledgement is recognisably the same message.
            "Message-ID": f"<delivery-{delivery.pk}@uplift.localhost>",
            "List-Unsubscribe": f"<{unsubscribe}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
    message.attach_alternative(
        rendering.email_html(
            rendered=rendered, unsubscribe_url=unsubscribe, preferences_url=preferences, pixel_url=pixel
        ),
        "text/html",
    )
    # The connection is opened here and closed only after the send is recorded: between the server's
    # acceptance and our record, a crash means a resend (same Message-ID), so that window holds no
    # round trip that can wait, such as the QUIT a self-closing send would make first.
    smtp = mail.get_connection()
    try:
        try:
            smtp.open()
            message.connection = smtp
            message.send()
        except Exception:
            # Release the claim so a retry can send it; the SMTP server did not accept it.
            Delivery.objects.filter(pk=delivery_id).update(status=Delivery.Status.PENDING, claimed_at=None)
            raise
        Delivery.objects.filter(pk=delivery_id).update(status=Delivery.Status.SENT, sent_at=now)
        # SMTP acceptance is as far as we can see delivery (no bounce feed yet), so both are recorded now.
        record_event(delivery=delivery, kind=DeliveryEvent.Kind.SENT, now=now)
        record_event(delivery=delivery, kind=DeliveryEvent.Kind.DELIVERED, now=now)
    finally:
        _close_quietly(smtp)
    return True


def pending_prompts(*, user_id: str) -> list[Delivery]:
    """The in-app prompts a contact should see now."""
    contact = Contact.objects.filter(external_id=user_id).first()
    if contact is None or contact.customer_id is None:
        return []
    return list(
        Delivery.objects.select_related("step__opportunity", "offer")
        .filter(
            step__channel=OpportunityStep.Channel.IN_APP,
            step__opportunity__customer_id=contact.customer_id,
            status__in=(Delivery.Status.SENT, Delivery.Status.SHOWN),
        )
        .order_by("-created_at")[:5]
    )


def mark_prompts_delivered(*, deliveries: list[Delivery], now: datetime) -> None:
    """The SDK received these prompts."""
    for delivery in deliveries:
        record_event(delivery=delivery, kind=DeliveryEvent.Kind.DELIVERED, now=now)


# A prompt's status only moves forward, like the engine's step outcome.
_PROMPT_RANK = {
    Delivery.Status.SENT: 0,
    Delivery.Status.SHOWN: 1,
    Delivery.Status.CLICKED: 2,
    Delivery.Status.DISMISSED: 3,
    Delivery.Status.ACCEPTED: 4,
}
PROMPT_EVENTS = ("shown", "clicked", "dismissed")


class NotYourPrompt(Exception):
    """The prompt does not exist for this user (another customer's, or another workspace's)."""


def record_prompt_event(*, delivery_id: int, user_id: str, event: str, now: datetime) -> bool:
    """Record shown/clicked/dismissed reported by the SDK and tell the engine; False if already recorded."""
    if event not in PROMPT_EVENTS:
        raise ValueError(event)
    contact = Contact.objects.filter(external_id=user_id).first()
    with transaction.atomic():
        delivery = (
            Delivery.objects.select_for_update(of=("self",))
            .select_related("step__opportunity")
            .filter(pk=delivery_id, step__channel=OpportunityStep.Channel.IN_APP)
            .first()
        )
        if (
            delivery is None
            or contact is None
            or contact.customer_id is None
            or delivery.step.opportunity.customer_id != contact.customer_id
        ):
            raise NotYourPrompt
        if delivery.status not in _PROMPT_RANK:
            raise NotYourPrompt  # suppressed / holdout prompts were never shown
        recorded = record_event(delivery=delivery, kind=event, now=now)
        new_status = Delivery.Status(event)
        if _PROMPT_RANK[new_status] > _PROMPT_RANK[Delivery.Status(delivery.status)]:
            delivery.status = new_status
            if event == "clicked":
                delivery.clicked_at = now
            delivery.save(update_fields=["status", "clicked_at"])
        record_step_outcome(step_id=delivery.step_id, outcome=event, now=now)
    return recorded


def record_open(*, delivery_id: int, now: datetime) -> bool:
    """The email's tracking pixel was loaded."""
    delivery = Delivery.objects.filter(pk=delivery_id).first()
    return delivery is not None and record_event(delivery=delivery, kind=DeliveryEvent.Kind.OPENED, now=now)


def record_click(*, delivery_id: int, now: datetime) -> bool:
    """The recipient opened the offer's upgrade link (call from the upgrade page's GET)."""
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().filter(pk=delivery_id).first()
        if delivery is None:
            return False
        if delivery.clicked_at is None:
            delivery.clicked_at = now
            delivery.save(update_fields=["clicked_at"])
        record_step_outcome(step_id=delivery.step_id, outcome="clicked", now=now)
        return record_event(delivery=delivery, kind=DeliveryEvent.Kind.CLICKED, now=now)


def unsubscribe(*, contact_id: int, now: datetime) -> bool:
    """Stop all offer email to a contact; False when they had already unsubscribed."""
    return bool(Contact.objects.filter(pk=contact_id, unsubscribed_at__isnull=True).update(unsubscribed_at=now))


def resubscribe(*, contact_id: int) -> bool:
    """The contact asked for offer email again on the preferences page."""
    return bool(Contact.objects.filter(pk=contact_id, unsubscribed_at__isnull=False).update(unsubscribed_at=None))


@dataclass(frozen=True)
class SeenQuote:
    """What the customer saw on the upgrade page (signed into its form): the price and its terms."""

    proration_date: int
    amount_cents: int
    coupon_id: str = ""
    trial_days: int | None = None
    quantity: int | None = None


class QuoteOutdated(Exception):
    """The offer's terms changed since the page was shown (the incentive expired, or its coupon was
    only just created): the page must show a fresh price before anything is charged."""


@dataclass(frozen=True)
class UpgradeOffer:
    """What a delivery's link offers and, for Stripe-billed customers, the exact prorated price."""

    opportunity: Opportunity
    subscription: Subscription | None
    change: ChangeRequest | None
    proration_date: int
    preview: Preview | None
    incentive: queries.PromisedIncentive | None = None
    incentive_line: str = ""
    coupon_id: str = ""

    @property
    def quote(self) -> SeenQuote:
        amount = self.preview.amount_due_cents if self.preview else self.opportunity.estimated_uplift_cents
        trial_days = self.change.trial_days if self.change else None
        quantity = self.change.quantity if self.change else None
        return SeenQuote(self.proration_date, amount, self.coupon_id, trial_days, quantity)


def _coupon_terms(incentive: queries.PromisedIncentive | None) -> CouponTerms | None:
    if incentive is None or incentive.kind == Offer.Incentive.FREE_TRIAL:
        return None
    if incentive.kind == Offer.Incentive.PERCENT_OFF:
        return CouponTerms(percent_off=incentive.discount_percent, months=incentive.discount_months or 1)
    return CouponTerms(amount_off_cents=incentive.discount_amount_cents)


def _change_for(
    opportunity: Opportunity,
    subscription: Subscription | None,
    incentive: queries.PromisedIncentive | None,
    seats_to_add: int | None,
) -> ChangeRequest | None:
    if subscription is None:
        return None
    trial_days = (
        incentive.trial_days if incentive is not None and incentive.kind == Offer.Incentive.FREE_TRIAL else None
    )
    if seats_to_add:
        # A seat offer: the same plan with more seats (the quantity of the subscription's main item).
        return ChangeRequest(
            target_plan=subscription.plan,
            quantity=subscription.quantity + seats_to_add,
            coupon=_coupon_terms(incentive),
            trial_days=trial_days,
        )
    target = opportunity.target_plan
    if target is None:
        return None
    # A plan of another product line is added as a second item (add-on / cross-sell), else swapped in.
    return ChangeRequest(
        target_plan=target,
        quantity=subscription.quantity if target.product == subscription.plan.product else 1,
        add_on=target.product != subscription.plan.product,
        coupon=_coupon_terms(incentive),
        trial_days=trial_days,
    )


@dataclass(frozen=True)
class _Offered:
    """A delivery's offered change as of now: the customer's subscription, the change and its incentive."""

    delivery: Delivery
    opportunity: Opportunity
    subscription: Subscription | None
    change: ChangeRequest | None
    incentive: queries.PromisedIncentive | None

    @property
    def billed_by_stripe(self) -> bool:
        sub, change = self.subscription, self.change
        return bool(sub and change and sub.stripe_subscription_id and change.target_plan.stripe_price_id)


def _offered(delivery: Delivery, now: datetime) -> _Offered:
    opportunity = Opportunity.objects.select_related("customer", "current_plan", "target_plan", "rule").get(
        pk=delivery.step.opportunity_id
    )
    subscription = current_subscription(opportunity.customer)
    incentive = queries.promised_incentive(delivery=delivery, now=now)
    seats = (
        Offer.objects.filter(pk=delivery.offer_id).values_list("seats_to_add", flat=True).first()
        if delivery.offer_id
        else None
    )
    change = _change_for(opportunity, subscription, incentive, seats)
    return _Offered(delivery, opportunity, subscription, change, incentive)


def upgrade_offer(*, delivery_id: int, now: datetime) -> UpgradeOffer:
    """The comparison and Stripe's proration preview at `now` (reads only; changes nothing anywhere)."""
    offered = _offered(Delivery.objects.select_related("step").get(pk=delivery_id), now)
    proration_date = int(now.timestamp())
    quote = None
    if offered.billed_by_stripe:
        assert offered.subscription is not None and offered.change is not None
        quote = quote_change(subscription=offered.subscription, change=offered.change, proration_date=proration_date)
    target = offered.opportunity.target_plan
    return UpgradeOffer(
        opportunity=offered.opportunity,
        subscription=offered.subscription,
        change=offered.change,
        proration_date=proration_date,
        preview=quote.preview if quote else None,
        incentive=offered.incentive,
        incentive_line=(
            queries.promised_line(incentive=offered.incentive, target_name=target.name if target else "")
            if offered.incentive
            else ""
        ),
        coupon_id=quote.coupon_id if quote else "",
    )


def prepare_incentive(*, delivery_id: int) -> str:
    """Create the coupon a delivery's message promises in the workspace's Stripe account, so the upgrade
    page's GET (which may not write) can price it in; "" when there is nothing to prepare."""
    delivery = Delivery.objects.get(pk=delivery_id)
    terms = _coupon_terms(queries.promised_incentive(delivery=delivery, now=delivery.created_at))
    if terms is None or not stripe_connected(workspace_id=delivery.workspace_id):
        return ""
    return prepare_coupon(workspace_id=delivery.workspace_id, terms=terms)


def _attribution(delivery: Delivery, opportunity: Opportunity) -> Attribution:
    return Attribution(
        opportunity_id=opportunity.pk,
        offer_id=delivery.offer_id,
        variant=delivery.variant,
        trigger=opportunity.rule.kind,
    )


def upgrade_used(*, delivery_id: int) -> bool:
    """Whether this delivery's upgrade link has already been used."""
    delivery = Delivery.objects.select_related("step__opportunity").get(pk=delivery_id)
    return (
        delivery.status == Delivery.Status.ACCEPTED
        or delivery.step.opportunity.status == Opportunity.Status.ACCEPTED
        or upgrade_already_applied(delivery_id=delivery_id)
    )


def _upgrade_request(offered: _Offered, seen: SeenQuote) -> UpgradeRequest | None:
    """The Stripe upgrade to perform for what the customer saw; raises QuoteOutdated when terms changed."""
    if not offered.billed_by_stripe:
        return None
    assert offered.subscription is not None and offered.change is not None
    change, terms = offered.change, offered.change.coupon
    seen_terms = (seen.coupon_id, seen.trial_days, seen.quantity)
    if ((terms.id if terms else ""), change.trial_days, change.quantity) != seen_terms:
        if terms is not None:
            # The page priced it without its coupon (not created yet): create it now, then re-quote.
            prepare_coupon(workspace_id=offered.delivery.workspace_id, terms=terms)
        raise QuoteOutdated
    return UpgradeRequest(
        delivery_id=offered.delivery.pk,
        subscription=offered.subscription,
        change=offered.change,
        proration_date=seen.proration_date,
        previewed_amount_cents=seen.amount_cents,
        attribution=_attribution(offered.delivery, offered.opportunity),
        coupon_id=seen.coupon_id,
    )


def accept_upgrade(*, delivery_id: int, seen: SeenQuote, now: datetime) -> tuple[bool, Subscription | None]:
    """Apply the offered change once (Stripe via billing, or locally); (False, None) when already used.

    Raises QuoteOutdated (nothing charged) when the incentive the page priced is no longer the one
    that applies.
    """
    request = _upgrade_request(_offered(Delivery.objects.select_related("step").get(pk=delivery_id), now), seen)
    if request is not None:
        # Committed before anything else so the Stripe idempotency key survives a rollback below.
        open_upgrade_attempt(request=request, now=now)
    with transaction.atomic():
        # The delivery row lock serialises double clicks; billing's UpgradeAttempt makes it once-only anyway.
        delivery = Delivery.objects.select_for_update(of=("self",)).select_related("step").get(pk=delivery_id)
        offered = _offered(delivery, now)
        opportunity = offered.opportunity
        if delivery.status == Delivery.Status.ACCEPTED or opportunity.status == Opportunity.Status.ACCEPTED:
            return False, None
        subscription, change = offered.subscription, offered.change
        if subscription is None or change is None:
            return False, None
        request = _upgrade_request(offered, seen)
        if request is not None:
            if not perform_upgrade(request=request, now=now).applied:
                return False, None
        else:
            attribution = _attribution(delivery, opportunity)
            try:
                change_plan(
                    subscription=subscription,
                    plan=change.target_plan,
                    quantity=change.quantity,
                    now=now,
                    attribution=attribution,
                )
            except IntegrityError:
                return False, None
        delivery.status = Delivery.Status.ACCEPTED
        if delivery.clicked_at is None:
            delivery.clicked_at = now  # accepting through the link is also its click
        delivery.save(update_fields=["status", "clicked_at"])
        record_event(delivery=delivery, kind=DeliveryEvent.Kind.CLICKED, now=now)
        record_event(delivery=delivery, kind=DeliveryEvent.Kind.ACCEPTED, now=now)
        opportunity.status = Opportunity.Status.ACCEPTED
        opportunity.updated_at = now
        opportunity.save(update_fields=["status", "updated_at"])
        record_step_outcome(step_id=delivery.step_id, outcome=OpportunityStep.Outcome.ACCEPTED, now=now)
        subscription.refresh_from_db()
        return True, subscription


# Delivery tasks are republished after a minute, then after 2, 4, 8 minutes, then every 10 minutes: a
# lost publish is redone, a task waiting in a deep queue is not copied on every sweep.
REPUBLISH_FIRST = timedelta(minutes=1)
REPUBLISH_CAP = timedelta(minutes=10)


def due_steps_without_delivery(*, now: datetime) -> list[tuple[int, int]]:
    """(workspace id, step id) of due steps never delivered whose last publish is past its grace, all workspaces."""
    return list(
        OpportunityStep.all_workspaces.filter(status=OpportunityStep.Status.DUE)
        .filter(republish.due(now=now, first=REPUBLISH_FIRST, cap=REPUBLISH_CAP))
        .order_by("last_published_at", "id")
        .values_list("workspace_id", "id")[:1000]
    )


def unsent_emails(*, now: datetime) -> list[tuple[int, int]]:
    """(workspace id, delivery id) of emails never sent, or whose sender died, past their republish grace."""
    return list(
        Delivery.all_workspaces.filter(step__channel=OpportunityStep.Channel.EMAIL)
        # A live sender's claim is not worth a task: claim_email refuses it until the lease ends.
        .filter(Q(status=Delivery.Status.PENDING) | Q(status=Delivery.Status.SENDING, claimed_at__lt=now - SEND_LEASE))
        .filter(republish.due(now=now, first=REPUBLISH_FIRST, cap=REPUBLISH_CAP))
        .order_by("last_published_at", "id")
        .values_list("workspace_id", "id")[:1000]
    )


def mark_published(*, step_ids: list[int], delivery_ids: list[int], now: datetime) -> None:
    """Stamp steps and deliveries as (re)published now, so the sweeper's grace for them grows."""
    if step_ids:
        OpportunityStep.all_workspaces.filter(pk__in=step_ids, status=OpportunityStep.Status.DUE).update(
            last_published_at=now, publishes=F("publishes") + 1
        )
    if delivery_ids:
        Delivery.all_workspaces.filter(pk__in=delivery_ids).update(last_published_at=now, publishes=F("publishes") + 1)


def upgrade_offer_opportunity(*, delivery_id: int) -> Opportunity:
    """The opportunity a delivery's link is about."""
    delivery = Delivery.objects.select_related("step").get(pk=delivery_id)
    return Opportunity.objects.select_related("customer", "current_plan", "target_plan").get(
        pk=delivery.step.opportunity_id
    )
