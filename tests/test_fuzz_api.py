"""Fuzzing the JSON API from its own OpenAPI schema (schemathesis), with valid keys.

Every operation in /api/schema/ is exercised with generated inputs (path, query, headers, body) and the
workspace's real key for its security scheme. Pass criterion: no 5xx, and every response's body and
content type match what the schema documents for that status. Routes merged later appear in the
schema and are fuzzed with no change here; a new security scheme needs a line in `credentials`.

Bounded for CI: FUZZ_EXAMPLES examples per operation (env UPLIFT_FUZZ_EXAMPLES, default 25), derandomized
so a failure reproduces; raise it for a longer local run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance

from expansion.wsgi import application
from tests.conftest import Tenant

# schemathesis 3 still uses jsonschema's deprecated RefResolver; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:jsonschema:DeprecationWarning")

FUZZ_EXAMPLES = int(os.environ.get("UPLIFT_FUZZ_EXAMPLES", "25"))
CHECKS = (not_a_server_error, response_schema_conformance, content_type_conformance)


def credentials(tenant: Tenant, operation: schemathesis.models.APIOperation) -> dict[str, str]:
    """The real key for the operation's declared security scheme."""
    schemes = {name for requirement in operation.definition.raw.get("security", []) for name in requirement}
    if "writeKey" in schemes:
        return {"Authorization": tenant.basic()["HTTP_AUTHORIZATION"]}
    if "secretKey" in schemes:
        return {"Authorization": tenant.bearer()["HTTP_AUTHORIZATION"]}
    return {}


@pytest.fixture
def keep_test_connection() -> Iterator[None]:
    """The WSGI handler closes the DB connection after each request; in a test that is the test's own
    transaction. Django's test client does the same as this: detach the handler for the test."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def load_schema() -> schemathesis.specs.openapi.schemas.BaseOpenAPISchema:
    return schemathesis.from_wsgi("/api/schema/?format=json", application)


@pytest.mark.django_db
def test_the_schema_documents_every_json_endpoint(keep_test_connection):
    paths = {operation.ok().path for operation in load_schema().get_all_operations()}
    assert {"/v1/track", "/v1/identify", "/v1/group", "/v1/page", "/v1/batch", "/v1/prompts"} <= paths
    schemes = load_schema().raw_schema["components"]["securitySchemes"]
    # One definition of each scheme (accounts/schema.py), with every way a write key is accepted.
    assert (schemes["writeKey"]["type"], schemes["writeKey"]["scheme"]) == ("http", "basic")
    assert "Bearer" in schemes["writeKey"]["description"] and "writeKey" in schemes["writeKey"]["description"]
    assert (schemes["secretKey"]["type"], schemes["secretKey"]["scheme"]) == ("http", "bearer")


@pytest.mark.django_db
def test_every_operation_survives_generated_input_with_valid_keys(tenant_a, keep_test_connection):
    schema = load_schema()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations
    for operation in operations:
        fuzz_operation(operation, credentials(tenant_a, operation))


def fuzz_operation(operation: schemathesis.models.APIOperation, headers: dict[str, str]) -> None:
    assert headers, f"{operation.verbose_name}: no credentials for its security scheme"

    @given(case=operation.as_strategy())
    @hypothesis_settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        response = case.call(headers={**(case.headers or {}), **headers})
        case.validate_response(response, checks=CHECKS)

    run()
