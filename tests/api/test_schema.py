"""schemathesis against the live schema on a live server, as a curator's script would call it.

Every operation of /api/schema/ gets generated requests (valid and invalid);
each response must be no 5xx and must match the schema: a documented status
code, content type, headers and body. Each case is sent twice: with the
generated path parameters (mostly naming nothing: 404s), then with those of
the seeded objects, so that the generated query and body reach real ones.
"""
from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from rest_framework.authtoken.models import Token

from ouroboros.celery import app
from tests.support.schema import served_schema

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MAX_EXAMPLES = 4
# Left out: `positive_data_acceptance`, which expects every schema-valid request to succeed.
# Here some are refused by rules that depend on what is stored, with a 400 naming the field:
# a reject reason the lineage does not offer, a name already taken, a wrong password.
EXCLUDED = [positive_data_acceptance]


@pytest.fixture
def token(curator) -> str:
    return Token.objects.get_or_create(user=curator)[0].key


# Built at collection, so that schemathesis makes one test per operation. (Its lazy
# `from_fixture` loader, which could fetch the schema from the live server, breaks on
# pytest 9.2's node ids.) The first thing each test checks is that the live server
# serves this very schema.
SCHEMA = served_schema()
schema = schemathesis.openapi.from_dict(SCHEMA)
# Coverage-phase cases (boundaries and every kind of invalid value) plus fuzzing, valid and invalid.
schema.config.phases.stateful.enabled = False


@pytest.fixture
def live_api(live_server, world, token):
    served = requests.get(f"{live_server.url}/api/schema/", params={"format": "json"},
                          headers={"Authorization": f"Token {token}"}, timeout=30)
    assert served.status_code == 200 and served.json() == SCHEMA, "the live server serves another schema"
    app.control.purge()  # what a case queues (jobs, exports) goes to no worker: start clean, end clean
    yield live_server.url
    app.control.purge()


def real_path_parameters(path: str, world) -> dict:
    """The seeded object each path parameter names."""
    ids = {"/api/samples/": world["samples"][1].pk, "/api/jobs/": world["job"].pk,
           "/api/training-sets/": world["training_set"].pk, "/api/generations/": world["generation"].pk}
    found = {"slug": world["lineage"].slug}
    for prefix, pk in ids.items():
        if path.startswith(prefix):
            found["id"] = pk
    return found


@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@schema.parametrize()
def test_the_api_matches_its_schema_and_never_answers_5xx(case, live_api, world, token):
    headers = {"Authorization": f"Token {token}"}
    case.call_and_validate(base_url=live_api, headers=headers, excluded_checks=EXCLUDED)
    if case.path_parameters:
        real = real_path_parameters(case.operation.path, world)
        case.path_parameters = {**case.path_parameters,
                                **{k: v for k, v in real.items() if k in case.path_parameters}}
        case.call_and_validate(base_url=live_api, headers=headers, excluded_checks=EXCLUDED)
