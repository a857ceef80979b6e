"""The values a template may name, and the seeded templates from the methodology (pure data)."""

from __future__ import annotations

from dataclasses import dataclass

# Every value a template may name, with what it holds. Anything else is refused when saved.
VALUES: dict[str, str] = {
    "first_name": "The contact's first name",
    "name": "The contact's full name",
    "product_name": "Your product (the workspace name)",
    "customer_name": "The customer company's name",
    "months_as_customer": 'How long they have paid you, e.g. "7 months"',
    "current_plan": "Their current plan",
    "current_price": "Their current plan's monthly price",
    "resource": "What the trigger's meter counts, e.g. subscribers",
    "usage": "Their current usage of that meter",
    "limit": "Their plan's limit on that meter",
    "percent": "Percent of the limit used",
    "target_plan": "The offered plan or product",
    "target_price": "The offered plan's monthly price",
    "target_limit": "The offered plan's limit on the meter",
    "target_features": "The offered plan's features (a list)",
    "price_difference": "How much more per month than now",
    "capacity_multiple": 'How much more capacity, e.g. "5x"',
    "comparison_line": 'e.g. "For $20 more, you get 5x the subscribers"',
    "benefit": "The offer's headline benefit",
    "hours_saved": "Hours a month the offer saves (set on the offer)",
    "roi_line": 'e.g. "Growth saves you 10 hours/month = $500 value"',
    "social_proof": 'From your own customers: "62% of teams your size use Growth"',
    "risk_line": 'e.g. "Try Growth free for 14 days"',
    "value_line": "The line of the offer's value framing (ROI, comparison, social proof, risk reduction)",
    "incentive_line": 'e.g. "First month 50% off" (absent when none or expired)',
    "discount_percent": "Percent off (incentive)",
    "discount_amount": "Amount off (incentive)",
    "trial_days": "Free trial days (incentive)",
    "offer_ends": "When a limited-time incentive ends",
    "upgrade_url": "The signed link to the one-click upgrade page",
    "sender_name": "Who signs the message",
}
URL_VALUES = {"upgrade_url"}


@dataclass(frozen=True)
class SeedTemplate:
    key: str
    name: str
    channel: str
    subject: str
    body: str


USAGE_UPSELL = SeedTemplate(
    key="usage-upsell",
    name="Upsell email: usage-based",
    channel="email",
    subject="You're almost at your limit",
    body="""Hi {{ first_name }},

Great news - you've used {{ percent }}% of your {{ resource }} this month. That means you're getting real value from {{ product_name }}.

You're currently on {{ current_plan }} with {{ limit }} {{ resource }}.

{{ target_plan }} gives you:
{{ target_features }}

**Upgrade to {{ target_plan }} for {{ target_price }}/month** (only {{ price_difference }} more than you pay now)
{{#value_line}}
{{ value_line }}
{{/value_line}}{{#incentive_line}}
{{ incentive_line }}
{{/incentive_line}}
[Upgrade Now]({{ upgrade_url }})

Questions? Just reply.

{{ sender_name }}""",
)

FEATURE_UPSELL = SeedTemplate(
    key="feature-upsell",
    name="Upsell email: feature-based",
    channel="email",
    subject="Did you know you can {{ benefit }}?",
    body="""Hi {{ first_name }},

I noticed you've been using {{ resource }} a lot. Nice!

Did you know with {{ target_plan }} you could:
{{ target_features }}
{{#hours_saved}}
Teams like yours typically save {{ hours_saved }} hours/month with these features.
{{/hours_saved}}{{#social_proof}}
{{ social_proof }}.
{{/social_proof}}
**Try {{ target_plan }} free for {{ trial_days }} days:**
[Start Free Trial]({{ upgrade_url }})

{{ sender_name }}""",
)

CROSS_SELL = SeedTemplate(
    key="cross-sell",
    name="Cross-sell email",
    channel="email",
    subject="The next step after {{ product_name }}",
    body="""Hi {{ first_name }},

You've been using {{ product_name }} for {{ months_as_customer }} now. Based on your progress, you might be ready for the next step.

Customers who've done what you've done often benefit from {{ target_plan }}, which helps you:
{{ target_features }}

{{#discount_percent}}**As a {{ product_name }} customer, get {{ discount_percent }}% off:**
{{/discount_percent}}[Learn More]({{ upgrade_url }})

{{ sender_name }}""",
)

LIMIT_PROMPT = SeedTemplate(
    key="limit-prompt",
    name="In-app: approaching a limit (Example 1)",
    channel="in_app",
    subject="Your list is growing!",
    body="""You've reached {{ usage }} of {{ limit }} {{ resource }}. Upgrade to {{ target_plan }} ({{ target_price }}/mo) for:
{{ target_features }}

[Upgrade Now{{#incentive_line}} - {{ incentive_line }}{{/incentive_line}}]({{ upgrade_url }})""",
)

COURSE_CROSS_SELL_PROMPT = SeedTemplate(
    key="course-cross-sell-prompt",
    name="In-app: cross-sell after completion (Example 2)",
    channel="in_app",
    subject="Congratulations on finishing {{ current_plan }}!",
    body="""You've learned the framework. Now let's apply it.

Join the {{ target_plan }}:
{{ target_features }}
{{#discount_amount}}
{{ current_plan }} graduates get {{ discount_amount }} off.
{{/discount_amount}}
[Apply Now]({{ upgrade_url }})""",
)

# For signals without a limit or a course (team growth, renewals, milestones...): positions the
# target plan's specific gains, per the methodology's "DO" lines, without naming usage figures.
NEXT_STEP_EMAIL = SeedTemplate(
    key="next-step-upsell",
    name="Upsell email: next step (renewals, growth, milestones)",
    channel="email",
    subject="{{ target_plan }} for {{ customer_name }}",
    body="""Hi {{ first_name }},

You're on {{ current_plan }} today.{{#target_features}} Here's what {{ target_plan }} adds for your team:
{{ target_features }}
{{/target_features}}
{{#value_line}}
{{ value_line }}
{{/value_line}}
**Move to {{ target_plan }} for {{ target_price }}/month**{{#incentive_line}} - {{ incentive_line }}{{/incentive_line}}

[Upgrade Now]({{ upgrade_url }})

Questions? Just reply.

{{ sender_name }}""",
)

NEXT_STEP_PROMPT = SeedTemplate(
    key="next-step-prompt",
    name="In-app: next step (renewals, growth, milestones)",
    channel="in_app",
    subject="Ready for {{ target_plan }}?",
    body="""Move to {{ target_plan }} ({{ target_price }}/mo).{{#target_features}} It adds:
{{ target_features }}
{{/target_features}}

[Upgrade Now{{#incentive_line}} - {{ incentive_line }}{{/incentive_line}}]({{ upgrade_url }})""",
)

SEEDS = (
    USAGE_UPSELL,
    FEATURE_UPSELL,
    CROSS_SELL,
    LIMIT_PROMPT,
    COURSE_CROSS_SELL_PROMPT,
    NEXT_STEP_EMAIL,
    NEXT_STEP_PROMPT,
)
DEFAULT_EMAIL = USAGE_UPSELL.key
DEFAULT_PROMPT = LIMIT_PROMPT.key

# Templates used when no offer is attached to a rule, by the rule's signal kind: (email, prompt).
# The feature-based email needs an offer's trial to be truthful, so it is only used through an offer.
DEFAULTS_BY_SIGNAL: dict[str, tuple[str, str]] = {
    "limit_percent": (USAGE_UPSELL.key, LIMIT_PROMPT.key),
    "completion": (CROSS_SELL.key, COURSE_CROSS_SELL_PROMPT.key),
}
DEFAULT_OTHER_SIGNALS = (NEXT_STEP_EMAIL.key, NEXT_STEP_PROMPT.key)
