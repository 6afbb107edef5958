"""Schemathesis against the live schema of the import endpoints: generated requests
(with a curator's token) never get a 5xx, and every response matches the schema."""
from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.specs.openapi.checks import positive_data_acceptance

from ouroboros.wsgi import application
from tests.factories import CURATOR, make_user
from tests.support.schema import served_schema

pytestmark = pytest.mark.django_db

# The schema /api/schema/ serves (its live copy is checked in tests/api/test_schema.py),
# called in process through the WSGI application.
schema = schemathesis.openapi.from_dict(served_schema())
schema.app = application
schema = schema.include(tag="imports")


@pytest.fixture(autouse=True)
def keep_the_test_connection():
    """In process, as Django's test client does: a request must not close the
    connection that holds the test's transaction."""
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


@pytest.fixture
def curator_token(db) -> str:
    return Token.objects.create(user=make_user("sam", CURATOR)).key


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_import_endpoints_never_fail_and_match_their_schema(case, curator_token, lineage):
    if "slug" in (case.path_parameters or {}):
        # A real lineage, so uploads get past the 404 to the file checks.
        case.path_parameters["slug"] = lineage.slug
    # Every other check runs. "Schema-valid data is accepted" cannot hold for an upload:
    # the schema says "a file", but only a real .jsonl/.csv/.parquet file is a valid import.
    case.call_and_validate(headers={"Authorization": f"Token {curator_token}"},
                           excluded_checks=[positive_data_acceptance])
