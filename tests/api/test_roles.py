"""Every API endpoint refuses and admits the same people as the pages do.

One row per (route, method): the least role it needs. The table is checked
against the routes themselves, so a new endpoint without a row fails here.
"""
from __future__ import annotations

import pytest
from django.urls import URLPattern, get_resolver, reverse
from rest_framework.test import APIClient

from curation.api import urls as api_urls
from generation.api import urls as generation_api_urls
from tests.api.conftest import token_client
from tests.factories import make_user

PUBLIC, REVIEWER, CURATOR = "public", "reviewer", "curator"

# (route name, method): (least role, body for a POST/PATCH)
TABLE = {
    ("api-token", "post"): (PUBLIC, None),
    ("api-lineages", "get"): (CURATOR, None),
    ("api-lineages", "post"): (CURATOR, {"name": "A new one", "slug": "a-new-one"}),
    ("api-lineage", "get"): (CURATOR, None),
    ("api-lineage", "patch"): (CURATOR, {"duplicate_threshold": 0.8}),
    ("api-lineage-overview", "get"): (CURATOR, None),
    ("api-lineage-flag-fits", "get"): (CURATOR, None),
    ("api-lineage-flag-fits", "post"): (CURATOR, {}),
    ("api-generations", "get"): (CURATOR, None),
    ("api-passages", "get"): (CURATOR, None),
    ("api-passages", "post"): (CURATOR, {"passages": [{"title": "T", "text": "A new real passage."}]}),
    ("api-training-set-plan", "get"): (CURATOR, None),
    ("api-generation", "get"): (CURATOR, None),
    ("api-generation-metrics", "get"): (CURATOR, None),
    ("api-generation-metrics-recompute", "post"): (CURATOR, {}),
    ("api-jobs", "get"): (CURATOR, None),
    ("api-jobs", "post"): (CURATOR, {"requested": 2}),
    ("api-job", "get"): (CURATOR, None),
    ("api-job-cancel", "post"): (CURATOR, {}),
    ("api-samples", "get"): (REVIEWER, None),
    ("api-queue-next", "post"): (REVIEWER, {}),
    ("api-review-undo", "post"): (REVIEWER, {}),
    ("api-sample", "get"): (REVIEWER, None),
    ("api-sample-decide", "post"): (REVIEWER, {"decision": "accept"}),
    ("api-sample-release", "post"): (REVIEWER, {}),
    ("api-training-sets", "get"): (CURATOR, None),
    ("api-training-sets", "post"): (CURATOR, {"seed": 3}),
    ("api-training-set", "get"): (CURATOR, None),
    ("api-exports", "get"): (CURATOR, None),
    ("api-export-retry", "post"): (CURATOR, {}),
    ("api-training-set-download", "get"): (CURATOR, None),
    ("api-lineage-imports", "post"): (CURATOR, {}),  # a file upload: a JSON body is refused with 415
    ("api-import", "get"): (CURATOR, None),
    # generation's routes. A host the allowlist refuses: answered with a 400 and no request sent anywhere.
    ("api-generation-student", "post"): (CURATOR, {"base_url": "http://10.1.2.3:8000/v1", "model": "m"}),
    # The trainer's runs: roles are checked before the run (here one that does not exist) is looked up.
    ("api-training-runs", "post"): (CURATOR, {"training_set": 999_999}),
    ("api-training-run", "get"): (CURATOR, None),
    ("api-training-run-cancel", "post"): (CURATOR, {}),
}

ROLES = ["anonymous", "outsider", "reviewer", "curator", "superuser"]


def api_routes() -> set[tuple[str, str]]:
    """(name, method) for every API route and each HTTP method its view implements."""
    routes = set()
    for pattern in [*get_resolver(generation_api_urls).url_patterns, *get_resolver(api_urls).url_patterns]:
        assert isinstance(pattern, URLPattern)
        if pattern.name == "api-not-found":
            continue
        view = pattern.callback.view_class
        for method in ("get", "post", "put", "patch", "delete"):
            if hasattr(view, method):
                routes.add((pattern.name, method))
    return routes


def test_every_api_route_has_a_row_and_every_row_a_route():
    assert api_routes() == set(TABLE)


def _args(name: str, world) -> list:
    lineage, sample = world["lineage"], world["samples"][0]
    by_name = {
        "api-token": [], "api-lineages": [],
        "api-generation": [world["generation"].pk], "api-generation-metrics": [world["generation"].pk],
        "api-generation-metrics-recompute": [world["generation"].pk], "api-generation-student": [world["generation"].pk],
        "api-job": [world["job"].pk], "api-job-cancel": [world["job"].pk],
        "api-sample": [sample.pk], "api-sample-decide": [sample.pk], "api-sample-release": [sample.pk],
        "api-training-set": [world["training_set"].pk], "api-exports": [world["training_set"].pk],
        "api-export-retry": [world["training_set"].pk, "chat"],
        "api-training-set-download": [world["training_set"].pk, "chat"],
        "api-import": [world["passage_import"].pk],
        "api-training-runs": [], "api-training-run": [999_999], "api-training-run-cancel": [999_999],
    }
    return by_name.get(name, [lineage.slug])


def _client(role: str, reviewer, curator, how: str) -> APIClient:
    user = {"anonymous": None, "outsider": make_user("olga"), "reviewer": reviewer, "curator": curator,
            "superuser": make_user("sam", is_superuser=True, is_staff=True)}[role]
    if user is None:
        return APIClient()
    if how == "token":
        return token_client(user)
    client = APIClient()
    client.force_login(user)
    return client


def _allowed(least: str, role: str) -> bool:
    rank = {"anonymous": 0, "outsider": 1, "reviewer": 2, "curator": 3, "superuser": 4}[role]
    return least == PUBLIC or rank >= {REVIEWER: 2, CURATOR: 3}[least]


@pytest.mark.parametrize("how", ["token", "session"])
@pytest.mark.parametrize("role", ROLES)
def test_each_role_on_each_endpoint(role, how, world, reviewer, curator):
    client = _client(role, reviewer, curator, how)
    for (name, method), (least, body) in sorted(TABLE.items()):
        url = reverse(name, args=_args(name, world))
        if name == "api-token":
            body = {"username": "carl", "password": "pw-carl"}
        response = getattr(client, method)(url, body, format="json") if body is not None else getattr(client, method)(url)
        where = f"{method.upper()} {url} as {role} ({how}): {response.status_code} {getattr(response, 'data', '')}"
        assert response.status_code < 500, where
        if _allowed(least, role):
            assert response.status_code not in (401, 403), where
        elif role == "anonymous":
            # Token auth answers first: 401 with a WWW-Authenticate challenge, for sessions too.
            assert response.status_code == 401, where
            assert response["WWW-Authenticate"] == "Token", where
            assert response.json()["code"] == "not_authenticated", where
        else:
            assert response.status_code == 403, where
            assert response.json()["code"] == "permission_denied", where
