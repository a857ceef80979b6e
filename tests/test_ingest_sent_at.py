"""Client clock skew: like Segment, `timestamp` is shifted by (our receipt time - the client's `sentAt`)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.tenancy import tenant_scope
from tests.test_ingest_limits import NOTHING, good, post, written
from triggers.models import Event

pytestmark = pytest.mark.django_db


def _stored_timestamps(tenant) -> dict[str, object]:  # type: ignore[no-untyped-def]
    with tenant_scope(tenant.workspace):
        return dict(Event.objects.values_list("message_id", "timestamp"))


def test_a_call_sent_from_a_clock_two_hours_behind_is_stored_at_the_right_time(tenant_a):
    behind = timedelta(hours=2)
    client_now = timezone.now() - behind
    before = timezone.now()
    call = good("skewed", timestamp=(client_now - timedelta(minutes=10)).isoformat(), sentAt=client_now.isoformat())
    response = post(tenant_a, "/v1/track", call)
    after = timezone.now()
    assert response.status_code == 200, response.content
    stored = _stored_timestamps(tenant_a)["skewed"]
    # The event happened 10 minutes before the client sent it, whatever the client's clock said.
    assert before - timedelta(minutes=10) <= stored <= after - timedelta(minutes=10)


def test_the_batch_sent_at_applies_to_its_calls_and_a_calls_own_sent_at_wins(tenant_a):
    now = timezone.now()
    ahead = now + timedelta(hours=30)  # a client clock 30 hours ahead: uncorrected, "in the future"
    body = {
        "batch": [
            good("from-batch", timestamp=(ahead - timedelta(minutes=1)).isoformat()),
            good("own", timestamp=(now - timedelta(minutes=5)).isoformat(), sentAt=now.isoformat()),
            good("no-timestamp"),
        ],
        "sentAt": ahead.isoformat(),
    }
    response = post(tenant_a, "/v1/batch", body)
    assert response.status_code == 200, response.content
    assert response.json()["stored"] == 3
    stored = _stored_timestamps(tenant_a)
    assert abs(stored["from-batch"] - (timezone.now() - timedelta(minutes=1))) < timedelta(seconds=30)
    assert abs(stored["own"] - (now - timedelta(minutes=5))) < timedelta(seconds=30)
    assert abs(stored["no-timestamp"] - now) < timedelta(seconds=30)


def test_a_malformed_sent_at_is_a_400_naming_the_field_and_nothing_is_written(tenant_a):
    response = post(tenant_a, "/v1/batch", {"batch": [good("a")], "sentAt": "yesterday"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert response.json()["error"]["details"] == [{"field": "sentAt", "code": "invalid"}]
    response = post(tenant_a, "/v1/track", good("b", sentAt=12))
    assert response.status_code == 400
    assert [(d["index"], d["field"], d["code"]) for d in response.json()["error"]["details"]] == [
        (0, "sentAt", "invalid")
    ]
    assert written(tenant_a) == NOTHING
