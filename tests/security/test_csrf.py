"""CSRF: every state-changing route refuses a request without the token and accepts one with it.

The routes come from the access table (tests/security/test_authz.py): every
POST/PUT/PATCH/DELETE a permitted user may send. Requests use session auth,
the way a browser does. htmx sends the token as the X-CSRFToken header that
base.html puts in `hx-headers` on <body>; plain forms send `csrfmiddlewaretoken`.

API requests authenticated by a token (`Authorization: Token ...`) are exempt
from CSRF by design in DRF: a browser never attaches that header by itself,
so another site cannot forge it. Session-authenticated API requests are
checked like pages (DRF's SessionAuthentication enforces CSRF).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from django.conf import settings
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token

from curation.models import Review, Sample
from tests.security.test_authz import (
    ACCESS,
    LEVEL,
    UNSAFE,
    USERS,
    client_for,
    describe,
    outcome_matches,
    unique_routes,
    url_for,
    world,  # noqa: F401  (the fixture)
)

HX_HEADERS = re.compile(r"<body[^>]*\shx-headers='([^']*)'")


def state_changing_cases() -> list[tuple[str, str, str]]:
    """(route name, method, the weakest user allowed to send it) for every unsafe method in the table."""
    cases = []
    for name, rule in ACCESS.items():
        if name in ("api-not-found", "api-token"):
            # No session is read or made: the 404 answers everything unauthenticated, and the token
            # endpoint hands its token only to the caller (who must already hold the password).
            continue
        user = min((u for u, role in USERS.items() if LEVEL[role] >= LEVEL[rule.role]), key=lambda u: LEVEL[USERS[u]])
        cases += [(name, method, user) for method in rule.allowed if method in UNSAFE]
    return cases


def csrf_token(client) -> str:
    """The token a page hands the browser: rendered into the log-in page, kept in the csrftoken cookie."""
    client.get(reverse("login"))
    return client.cookies[settings.CSRF_COOKIE_NAME].value


def test_the_table_has_state_changing_routes_to_check():
    names = {name for name, _, _ in state_changing_cases()}
    assert {"review-decide", "review-undo", "training-set-create", "job-start", "logout", "login"} <= names


def test_every_state_changing_route_refuses_a_request_without_the_token(world):
    users, objects = world
    routes = {route.name: route for route in unique_routes()}
    wrong = []
    for name, method, user in state_changing_cases():
        url = url_for(name, routes[name].params, objects, ACCESS[name].objects)
        client = client_for(users, user, enforce_csrf_checks=True)
        response = getattr(client, method.lower())(url)
        if response.status_code != 403 or b"CSRF" not in response.content:
            wrong.append(f"{method} {url} as {user} without a token: got {describe(response)}, expected a CSRF 403")
    assert not wrong, "\n".join(wrong)


def test_every_state_changing_route_accepts_the_token_as_header_or_form_field(world):
    users, objects = world
    routes = {route.name: route for route in unique_routes()}
    wrong = []
    for name, method, user in state_changing_cases():
        rule = ACCESS[name]
        url = url_for(name, routes[name].params, objects, rule.objects)
        expected = rule.expected(user, method)
        if rule.kind == "api":
            # The API reads JSON only, so a browser script sends the token as the header. What the
            # view then answers to an empty object is its own business (tests/api): not a CSRF 403.
            client = client_for(users, user, enforce_csrf_checks=True)
            response = getattr(client, method.lower())(url, "{}", content_type="application/json",
                                                       HTTP_X_CSRFTOKEN=csrf_token(client))
            if response.status_code == 403 or response.status_code >= 500:
                wrong.append(f"{method} {url} as {user} with the X-CSRFToken header: got {describe(response)}")
            continue
        ways = [("X-CSRFToken header", {}, True)]
        if method == "POST":
            ways.append(("csrfmiddlewaretoken field", {}, False))
        for way, data, as_header in ways:
            client = client_for(users, user, enforce_csrf_checks=True)
            token = csrf_token(client)
            if as_header:
                response = getattr(client, method.lower())(url, HTTP_X_CSRFTOKEN=token)
            else:
                response = client.post(url, {**data, "csrfmiddlewaretoken": token})
            if not outcome_matches(response, expected):
                wrong.append(f"{method} {url} as {user} with the {way}: got {describe(response)}, expected {expected}")
    assert not wrong, "\n".join(wrong)


def test_the_api_checks_csrf_for_a_session_and_not_for_an_api_token(world):
    """DRF: a session-authenticated API request needs the token; one with `Authorization: Token` does not."""
    users, objects = world
    url = reverse("api-training-set", args=[objects["training_set"]])
    session = client_for(users, "curator", enforce_csrf_checks=True)
    refused = session.post(url)
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"], "checked before anything else"
    key = Token.objects.create(user=users["curator"]).key
    scripted = Client(enforce_csrf_checks=True).post(url, HTTP_AUTHORIZATION=f"Token {key}")
    assert scripted.status_code == 405, "no CSRF check: the view itself answers (GET only)"


def test_a_token_from_another_session_is_refused(world):
    users, objects = world
    sample = Sample.objects.get(pk=objects["sample"])
    stranger = client_for(users, "outsider", enforce_csrf_checks=True)
    client = client_for(users, "reviewer", enforce_csrf_checks=True)
    response = client.post(reverse("review-decide", args=[sample.pk]), {"decision": "accept"},
                           HTTP_X_CSRFTOKEN=csrf_token(stranger), HTTP_HX_REQUEST="true")
    assert response.status_code == 403
    assert not Review.objects.filter(sample=sample).exists()


def test_htmx_requests_carry_the_token_from_the_body_and_it_is_required(world):
    """The token htmx sends is the one base.html renders in hx-headers on <body>."""
    users, objects = world
    lineage = objects["lineage"]
    client = client_for(users, "reviewer", enforce_csrf_checks=True)
    page = client.get(reverse("review"), {"lineage": lineage}).content.decode()
    match = HX_HEADERS.search(page)
    assert match, "base.html must put hx-headers with the CSRF token on <body>"
    headers = json.loads(match.group(1))
    assert set(headers) == {"X-CSRFToken"} and len(headers["X-CSRFToken"]) >= 32
    sample = Sample.objects.get(pk=objects["sample"])
    assert f'id="sample-{sample.pk}"' in page, "the card this test decides is the one on the page"

    refused = client.post(reverse("review-decide", args=[sample.pk]), {"decision": "accept"}, HTTP_HX_REQUEST="true")
    assert refused.status_code == 403 and not Review.objects.filter(sample=sample).exists()

    accepted = client.post(reverse("review-decide", args=[sample.pk]), {"decision": "accept"},
                           HTTP_HX_REQUEST="true", HTTP_X_CSRFTOKEN=headers["X-CSRFToken"])
    assert accepted.status_code == 200 and "<html" not in accepted.content.decode(), "the next card, a partial"
    assert Review.objects.get(sample=sample).decision == "accept"


def test_every_template_that_posts_with_htmx_is_rendered_inside_base_html():
    """hx-post/put/patch/delete only work with the token base.html provides: no page may skip it."""
    root = Path(settings.BASE_DIR) / "templates"
    texts = {path.relative_to(root).as_posix(): path.read_text(encoding="utf-8") for path in root.rglob("*.html")}
    extends_base = {name for name, text in texts.items() if re.search(r'{%\s*extends\s+"base\.html"', text)}
    # A partial is covered when a page that extends base.html includes it (directly or through another partial).
    covered, grew = set(extends_base), True
    while grew:
        grew = False
        for name, text in texts.items():
            if name in covered:
                continue
            if any(re.search(r'{%\s*include\s+"' + re.escape(name) + '"', texts[page]) for page in covered):
                covered.add(name)
                grew = True
    unsafe = {name for name, text in texts.items() if re.search(r"\bhx-(post|put|patch|delete)=", text)}
    assert unsafe, "the review card posts with htmx; the scan found nothing"
    assert unsafe <= covered, f"templates that post with htmx outside base.html's token: {sorted(unsafe - covered)}"
