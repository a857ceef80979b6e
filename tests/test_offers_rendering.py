"""Seeded templates rendered with real data; missing or unknown values fail before anything is sent."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.tenancy import tenant_scope
from billing.services import create_plan
from offers import catalog, placeholders, queries, rendering, services
from offers.models import Delivery, MessageTemplate, Offer
from tests.conftest import email_marketing_catalog
from tests.offers_fixtures import account_at_usage, peers_on, use_smtp_sink
from triggers.models import Rule
from triggers.services import create_limit_rule

NOW = timezone.now().replace(microsecond=0)


@pytest.fixture(autouse=True)
def smtp(settings):  # type: ignore[no-untyped-def]
    use_smtp_sink(settings)


def render_seed(key: str, values: dict) -> rendering.Rendered:  # type: ignore[type-arg]
    seed = next(s for s in catalog.SEEDS if s.key == key)
    return rendering.render_message(subject=seed.subject, body=seed.body, values=values, channel=seed.channel)


@pytest.fixture
def mailbird(tenant_a):  # type: ignore[no-untyped-def]
    """Example 1: Starter (1,000 subscribers) → Growth; Maya at 900; ten peers, six on Growth."""
    cat = email_marketing_catalog(tenant_a.workspace)
    with tenant_scope(tenant_a.workspace):
        peers_on(workspace=tenant_a.workspace, plans=[cat.growth] * 6 + [cat.starter] * 4, now=NOW)
        account = account_at_usage(
            workspace=tenant_a.workspace,
            plan=cat.starter,
            external_id="acme",
            email="maya@acme.example",
            name="Maya Chen",
            usage=900,
            now=NOW,
        )
    return tenant_a, cat, account


@pytest.mark.django_db
def test_usage_upsell_email_with_social_proof_and_incentive(mailbird):  # type: ignore[no-untyped-def]
    tenant, cat, account = mailbird
    with tenant_scope(tenant.workspace):
        offer = services.create_offer(
            workspace=tenant.workspace,
            name="Growth at 80%",
            kind=Offer.Kind.UPSELL,
            rule=Rule.objects.get(),
            target_plan=cat.growth,
            framing=Offer.Framing.SOCIAL_PROOF,
            incentive=Offer.Incentive.PERCENT_OFF,
            discount_percent=50,
            now=NOW,
        )
        opportunity = account.steps[0].opportunity
        values = queries.message_values(
            opportunity=opportunity, contact=account.contact, delivery_id=7, offer=offer, now=NOW
        )
    rendered = render_seed("usage-upsell", values)
    url = values["upgrade_url"]
    assert rendered.subject == "You're almost at your limit"
    assert rendered.text == (
        "Hi Maya,\n\n"
        "Great news - you've used 90% of your subscribers this month. That means you're getting real value from alpha.\n\n"
        "You're currently on Starter with 1,000 subscribers.\n\n"
        "Growth gives you:\n- 5,000 subscribers\n- Advanced automation\n- Priority delivery\n\n"
        "Upgrade to Growth for $49/month (only $20 more than you pay now)\n\n"
        "60% of teams your size use Growth\n\n"
        "First month 50% off\n\n"
        f"Upgrade Now: {url}\n\n"
        "Questions? Just reply.\n\n"
        "The alpha team"
    )
    assert "<li>Advanced automation</li>" in rendered.html
    assert "<strong>Upgrade to Growth for $49/month</strong> (only $20 more than you pay now)" in rendered.html
    assert f'<a href="{url}" ' in rendered.html and ">Upgrade Now</a>" in rendered.html
    assert rendered.links == (("Upgrade Now", url),)


@pytest.mark.django_db
def test_feature_upsell_email_with_trial_and_roi(mailbird):  # type: ignore[no-untyped-def]
    tenant, cat, account = mailbird
    with tenant_scope(tenant.workspace):
        offer = services.create_offer(
            workspace=tenant.workspace,
            name="Automation trial",
            kind=Offer.Kind.UPSELL,
            target_plan=cat.growth,
            framing=Offer.Framing.ROI,
            benefit="automate your welcome series",
            hours_saved_per_month=10,
            hourly_value_cents=5000,
            incentive=Offer.Incentive.FREE_TRIAL,
            trial_days=14,
            now=NOW,
        )
        values = queries.message_values(
            opportunity=account.steps[0].opportunity, contact=account.contact, delivery_id=8, offer=offer, now=NOW
        )
    assert values["roi_line"] == "Growth saves you 10 hours/month = $500 value"
    assert values["value_line"] == values["roi_line"]
    rendered = render_seed("feature-upsell", values)
    assert rendered.subject == "Did you know you can automate your welcome series?"
    assert rendered.text == (
        "Hi Maya,\n\n"
        "I noticed you've been using subscribers a lot. Nice!\n\n"
        "Did you know with Growth you could:\n- 5,000 subscribers\n- Advanced automation\n- Priority delivery\n\n"
        "Teams like yours typically save 10 hours/month with these features.\n\n"
        "60% of teams your size use Growth.\n\n"
        "Try Growth free for 14 days:\n"
        f"Start Free Trial: {values['upgrade_url']}\n\n"
        "The alpha team"
    )


@pytest.mark.django_db
def test_cross_sell_email_and_course_prompt_with_real_data(tenant_a):  # type: ignore[no-untyped-def]
    """Example 2: a course customer of seven months is offered the coaching cohort."""
    ws = tenant_a.workspace
    with tenant_scope(ws):
        course = create_plan(
            workspace=ws, key="course", name="Growth Masterclass", amount_cents=49700, tier=1, product="course"
        )
        cohort = create_plan(
            workspace=ws,
            key="cohort",
            name="Implementation Cohort",
            amount_cents=200000,
            tier=1,
            product="coaching",
            features=["6 weeks of group coaching", "Your questions answered live", "Accountability and feedback"],
        )
        rule = create_limit_rule(
            workspace=ws, name="Finished the course", meter_key="lessons", threshold_percent=100, channels=["in_app"]
        )
        course.limits = {"lessons": 40}
        course.save()
        rule.target_plan = cohort
        rule.save()
        from triggers.services import create_meter_definition

        create_meter_definition(
            workspace=ws,
            key="lessons",
            label="lessons",
            event_name="Lesson Completed",
            aggregation="count",
            reset="never",
        )
        account = account_at_usage(
            workspace=ws,
            plan=course,
            external_id="sam-co",
            email="sam@sam.example",
            name="Sam Ortiz",
            usage=40,
            now=NOW,
            started_at=NOW - timedelta(days=7 * 31),
            meter_key="lessons",
            period="all",
        )
        cross_email = services.create_offer(
            workspace=ws,
            name="Cohort 30% off",
            kind=Offer.Kind.CROSS_SELL,
            target_plan=cohort,
            incentive=Offer.Incentive.PERCENT_OFF,
            discount_percent=30,
            now=NOW,
        )
        values = queries.message_values(
            opportunity=account.steps[0].opportunity, contact=account.contact, delivery_id=9, offer=cross_email, now=NOW
        )
        email = render_seed("cross-sell", values)
        prompt_offer = services.create_offer(
            workspace=ws,
            name="Cohort $500 off",
            kind=Offer.Kind.CROSS_SELL,
            rule=rule,
            target_plan=cohort,
            incentive=Offer.Incentive.AMOUNT_OFF,
            discount_amount_cents=50000,
            now=NOW,
        )
        prompt_values = queries.message_values(
            opportunity=account.steps[0].opportunity,
            contact=account.contact,
            delivery_id=9,
            offer=prompt_offer,
            now=NOW,
        )
    prompt = render_seed("course-cross-sell-prompt", prompt_values)
    assert email.subject == "The next step after alpha"
    assert email.text == (
        "Hi Sam,\n\n"
        "You've been using alpha for 7 months now. Based on your progress, you might be ready for the next step.\n\n"
        "Customers who've done what you've done often benefit from Implementation Cohort, which helps you:\n"
        "- 6 weeks of group coaching\n- Your questions answered live\n- Accountability and feedback\n\n"
        "As a alpha customer, get 30% off:\n"
        f"Learn More: {values['upgrade_url']}\n\n"
        "The alpha team"
    )
    assert prompt.subject == "Congratulations on finishing Growth Masterclass!"
    assert prompt.text == (
        "You've learned the framework. Now let's apply it.\n\n"
        "Join the Implementation Cohort:\n"
        "- 6 weeks of group coaching\n- Your questions answered live\n- Accountability and feedback\n\n"
        "Growth Masterclass graduates get $500 off."
    )
    assert prompt.links == (("Apply Now", prompt_values["upgrade_url"]),)


@pytest.mark.django_db
def test_limit_prompt_of_example_1_and_an_incentive_that_expires(mailbird):  # type: ignore[no-untyped-def]
    tenant, cat, account = mailbird
    ends = NOW + timedelta(days=3)
    with tenant_scope(tenant.workspace):
        offer = services.create_offer(
            workspace=tenant.workspace,
            name="Growth 50% off",
            kind=Offer.Kind.UPSELL,
            rule=Rule.objects.get(),
            target_plan=cat.growth,
            incentive=Offer.Incentive.PERCENT_OFF,
            discount_percent=50,
            incentive_ends_at=ends,
            now=NOW,
        )
        opportunity = account.steps[0].opportunity
        live = queries.message_values(
            opportunity=opportunity, contact=account.contact, delivery_id=1, offer=offer, now=NOW
        )
        expired = queries.message_values(
            opportunity=opportunity, contact=account.contact, delivery_id=1, offer=offer, now=ends
        )
    before = render_seed("limit-prompt", live)
    after = render_seed("limit-prompt", expired)
    assert before.subject == "Your list is growing!"
    assert before.text == (
        "You've reached 900 of 1,000 subscribers. Upgrade to Growth ($49/mo) for:\n"
        "- 5,000 subscribers\n- Advanced automation\n- Priority delivery"
    )
    label = f"Upgrade Now - First month 50% off (until {ends:%b} {ends.day})"
    assert before.links == ((label, live["upgrade_url"]),)
    assert after.links == (("Upgrade Now", expired["upgrade_url"]),)
    assert "incentive_line" not in expired and "discount_percent" not in expired


@pytest.mark.django_db
def test_a_delivery_snapshots_the_incentive_only_while_it_is_live(mailbird):  # type: ignore[no-untyped-def]
    tenant, cat, account = mailbird
    with tenant_scope(tenant.workspace):
        services.create_offer(
            workspace=tenant.workspace,
            name="Growth 50% off",
            kind=Offer.Kind.UPSELL,
            rule=Rule.objects.get(),
            target_plan=cat.growth,
            incentive=Offer.Incentive.PERCENT_OFF,
            discount_percent=50,
            incentive_ends_at=NOW - timedelta(seconds=1),
            now=NOW,
        )
        email_step = next(s for s in account.steps if s.channel == "email")
        assert services.deliver_step(step_id=email_step.pk, now=NOW) != []
        delivery = Delivery.objects.get(step=email_step)
    assert delivery.incentive == "" and delivery.discount_percent is None
    assert "50%" not in delivery.body_text


def test_placeholder_language_is_a_sandbox():
    values = {"first_name": "Maya"}
    known = set(catalog.VALUES)
    # Template tags and attribute access are not part of the language: they stay inert text or fail.
    inert = placeholders.render(
        subject="Hi", body="{% load static %}{{ first_name }}", values=values, known=known, url_names=set()
    )
    assert inert.text == "{% load static %}Maya"
    with pytest.raises(placeholders.TemplateProblem) as attribute:
        placeholders.render(subject="Hi", body="{{ contact.email }}", values=values, known=known, url_names=set())
    assert attribute.value.problems == ["unreadable placeholder near '{{ contact.email }}': use {{ name }}"]
    with pytest.raises(placeholders.TemplateProblem) as unknown:
        placeholders.render(subject="Hi", body="{{ password }}", values=values, known=known, url_names=set())
    assert unknown.value.problems == ["unknown value {{ password }}"]
    # Values are escaped in HTML and never become markup.
    hostile = placeholders.render(
        subject="Hi",
        body="Hi **{{ first_name }}**",
        values={"first_name": "<b>[x](y)</b>"},
        known=known,
        url_names=set(),
    )
    assert hostile.html == "<p>Hi <strong>&lt;b&gt;[x](y)&lt;/b&gt;</strong></p>"


@pytest.mark.django_db
def test_a_template_naming_a_missing_value_fails_in_preview_and_is_never_sent(mailbird, sink):  # type: ignore[no-untyped-def]
    tenant, cat, account = mailbird
    with tenant_scope(tenant.workspace):
        templates = services.ensure_seeded_templates(workspace_id=tenant.workspace.pk, now=NOW)
        feature = templates["feature-upsell"]
        # No trial on this offer, and the feature-based email promises one.
        services.create_offer(
            workspace=tenant.workspace,
            name="No trial",
            kind=Offer.Kind.UPSELL,
            rule=Rule.objects.get(),
            target_plan=cat.growth,
            benefit="automate",
            email_template=feature,
            now=NOW,
        )
    preview = tenant.client.post(
        f"/dashboard/offers/templates/{feature.pk}/preview",
        {"subject": feature.subject, "body": feature.body},
        HTTP_HX_REQUEST="true",
    )
    assert preview.status_code == 200
    assert "no value for {{ trial_days }} in this customer&#x27;s data" in preview.content.decode()

    ok = tenant.client.post(
        f"/dashboard/offers/templates/{feature.pk}/preview", {"subject": "Hi {{ first_name }}", "body": "Hello"}
    )
    assert 'id="preview-subject">Hi Maya<' in ok.content.decode()

    with tenant_scope(tenant.workspace):
        email_step = next(s for s in account.steps if s.channel == "email")
        assert services.deliver_step(step_id=email_step.pk, now=NOW) == []
        delivery = Delivery.objects.get(step=email_step)
        assert delivery.status == Delivery.Status.FAILED
        assert delivery.suppressed_reason == "no value for {{ trial_days }} in this customer's data"
        assert list(delivery.events.values_list("kind", flat=True)) == ["suppressed"]
    assert sink.messages == []


@pytest.mark.django_db
def test_saving_a_template_with_an_unknown_value_is_refused_and_changes_nothing(tenant_a, tenant_b):  # type: ignore[no-untyped-def]
    with tenant_scope(tenant_a.workspace):
        template = services.ensure_seeded_templates(workspace_id=tenant_a.workspace.pk, now=NOW)["usage-upsell"]
    before = template.body
    response = tenant_a.client.post(
        f"/dashboard/offers/templates/{template.pk}/",
        {"name": template.name, "subject": template.subject, "body": "Hi {{ customer.owner.password }} {{ secret }}"},
    )
    assert response.status_code == 400
    with tenant_scope(tenant_a.workspace):
        assert MessageTemplate.objects.get(pk=template.pk).body == before
    # Another tenant's template is a 404, and nothing changes.
    other = tenant_b.client.post(
        f"/dashboard/offers/templates/{template.pk}/", {"name": "x", "subject": "x", "body": "x"}
    )
    assert other.status_code == 404
    assert tenant_b.client.get(f"/dashboard/offers/templates/{template.pk}/").status_code == 404
    with tenant_scope(tenant_a.workspace):
        assert MessageTemplate.objects.get(pk=template.pk).body == before
    saved = tenant_a.client.post(
        f"/dashboard/offers/templates/{template.pk}/",
        {"name": template.name, "subject": "Heads up, {{ first_name }}", "body": template.body},
    )
    assert saved.status_code == 302
    with tenant_scope(tenant_a.workspace):
        assert MessageTemplate.objects.get(pk=template.pk).subject == "Heads up, {{ first_name }}"
    page = tenant_a.client.get(f"/dashboard/offers/templates/{template.pk}/")
    assert page.status_code == 200 and b'hx-post="/dashboard/offers/templates/' in page.content
    assert tenant_a.client.get("/dashboard/offers/templates/").status_code == 200
    assert tenant_a.client.get("/dashboard/offers/").status_code == 200


@pytest.mark.django_db
def test_the_promised_incentive_is_honoured_only_inside_its_window(mailbird):  # type: ignore[no-untyped-def]
    tenant, cat, account = mailbird
    ends = NOW + timedelta(hours=48)
    with tenant_scope(tenant.workspace):
        services.create_offer(
            workspace=tenant.workspace,
            name="Growth 50% off",
            kind=Offer.Kind.UPSELL,
            rule=Rule.objects.get(),
            target_plan=cat.growth,
            incentive=Offer.Incentive.PERCENT_OFF,
            discount_percent=50,
            discount_months=2,
            incentive_ends_at=ends,
            now=NOW,
        )
        email_step = next(s for s in account.steps if s.channel == "email")
        services.deliver_step(step_id=email_step.pk, now=NOW)
        delivery = Delivery.objects.get(step=email_step)
    assert f"First 2 months 50% off (until {ends:%b} {ends.day})" in delivery.body_text
    assert queries.promised_incentive(delivery=delivery, now=ends - timedelta(seconds=1)) == queries.PromisedIncentive(
        kind="percent_off", discount_percent=50, discount_months=2, discount_amount_cents=None, trial_days=None
    )
    assert queries.promised_incentive(delivery=delivery, now=ends) is None


@pytest.mark.django_db
def test_founder_adds_an_offer_to_the_catalog(tenant_a, tenant_b):  # type: ignore[no-untyped-def]
    cat = email_marketing_catalog(tenant_a.workspace)
    with tenant_scope(tenant_a.workspace):
        rule = Rule.objects.get()
    form = {
        "name": "Growth 50% off",
        "kind": "upsell",
        "rule": rule.pk,
        "target_plan": cat.growth.pk,
        "framing": "comparison",
        "incentive": "percent_off",
        "discount_months": 1,
        "incentive_ends_at": "2030-01-31 23:59",
    }
    refused = tenant_a.client.post("/dashboard/offers/", form)  # percent off without a percentage
    assert refused.status_code == 400
    # Another workspace cannot attach its offer to this workspace's rule or plan.
    assert tenant_b.client.post("/dashboard/offers/", {**form, "discount_percent": 50}).status_code == 400
    with tenant_scope(tenant_a.workspace):
        assert not Offer.objects.exists()
    with tenant_scope(tenant_b.workspace):
        assert not Offer.objects.exists()
    created = tenant_a.client.post("/dashboard/offers/", {**form, "discount_percent": 50})
    assert created.status_code == 302
    with tenant_scope(tenant_a.workspace):
        offer = Offer.objects.get()
    assert (offer.rule_id, offer.target_plan_id, offer.discount_percent) == (rule.pk, cat.growth.pk, 50)
    assert offer.incentive_ends_at is not None and offer.incentive_ends_at.year == 2030
    assert b"Growth 50% off" in tenant_a.client.get("/dashboard/offers/").content
