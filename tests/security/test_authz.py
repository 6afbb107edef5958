"""Who may reach what: every URL pattern, anonymous and as each role, with each HTTP method.

ACCESS below is the table of record. The tests walk every pattern of
ROOT_URLCONF (through every include) and compare what each view answers with
what its row says. A pattern with no row fails: a new view cannot ship without
someone deciding who may use it.

Adding a view is one line in ACCESS, e.g. for an API endpoint that curators
read and change and that takes a lineage's slug:

    "api-lineage-detail": api(CURATOR, GET=200, PATCH=200, slug="lineage"),

Upper-case keywords are the methods a permitted user may use and what they
get; every other method must answer 405. Requests carry no body, so an
endpoint that validates its input answers POST with 400 (write POST=400). Lower-case keywords say which test
object fills each URL parameter (see OBJECTS in the `world` fixture).
Everything under admin/ is one rule: staff only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls.resolvers import RegexPattern, RoutePattern

from curation.models import GatePause, PassageImport
from curation.services.exports import export_run
from curation.services.review import sample_accept
from curation.services.training_sets import training_set_build
from generation.models import TrainingRun, base_model_record
from generation.services import job_create
from tests.factories import CURATOR as CURATOR_GROUP
from tests.factories import REVIEWER as REVIEWER_GROUP
from tests.factories import make_lineage, make_sample, make_user

# Roles, weakest first; each user below holds its role and every weaker one.
PUBLIC, USER, REVIEWER, CURATOR, STAFF = "public", "signed-in user", "reviewer", "curator", "staff"
LEVEL = {PUBLIC: 0, USER: 1, REVIEWER: 2, CURATOR: 3, STAFF: 4}
USERS = {"anonymous": PUBLIC, "outsider": USER, "reviewer": REVIEWER, "curator": CURATOR, "admin": STAFF}
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
UNSAFE = ("POST", "PUT", "PATCH", "DELETE")

# Outcomes besides a plain status code (or a set of acceptable ones).
LOGIN = "redirect to log in"
ADMIN_LOGIN = "redirect to the admin's log-in"
REDIRECT = "redirect"
API_ANONYMOUS = frozenset({401, 403})  # DRF: 401 when the first authenticator sends a challenge, else 403


@dataclass(frozen=True)
class Rule:
    role: str  # the weakest role that may use the view
    allowed: dict = field(default_factory=dict)  # method -> outcome for a permitted user; others: 405
    kind: str = "page"  # how a refusal looks: page (log in / 403), api (401/403), admin (admin log-in)
    objects: dict = field(default_factory=dict)  # URL parameter -> key of OBJECTS

    def expected(self, user: str, method: str):
        if LEVEL[USERS[user]] < LEVEL[self.role]:
            if self.kind == "admin":
                return ADMIN_LOGIN
            if self.kind == "api":
                return API_ANONYMOUS if user == "anonymous" else 403
            return LOGIN if user == "anonymous" else 403
        return self.allowed.get(method, 405)


def _rule(kind: str, role: str, spec: dict) -> Rule:
    allowed = {key: value for key, value in spec.items() if key.isupper()}
    unknown = set(allowed) - set(METHODS)
    assert not unknown, f"unknown HTTP method(s) {unknown} in a rule"
    return Rule(role, allowed, kind, {key: value for key, value in spec.items() if not key.isupper()})


def page(role: str, **spec) -> Rule:
    return _rule("page", role, spec)


def api(role: str, **spec) -> Rule:
    return _rule("api", role, spec)


ADMIN = Rule(STAFF, {"GET": 200}, "admin")
OK_ANY = frozenset({200, 503})  # /healthz answers 503 while a part is down; it is public either way

ACCESS: dict[str, Rule] = {
    # The project: home sends each role to its start page; /healthz is for load balancers.
    "home": page(USER, GET=REDIRECT),
    "healthz": page(PUBLIC, GET=OK_ANY),
    # django.contrib.auth (+ our rate-limited log-in). FormViews treat PUT as POST.
    "login": page(PUBLIC, GET=200, POST=200, PUT=200),
    "logout": page(PUBLIC, POST=REDIRECT),
    "password_change": page(USER, GET=200, POST=200, PUT=200),
    "password_change_done": page(USER, GET=200),
    "password_reset": page(PUBLIC, GET=200, POST=200, PUT=200),
    "password_reset_done": page(PUBLIC, GET=200),
    # An invalid link renders "unsuccessful" whatever the method; nothing changes.
    "password_reset_confirm": page(PUBLIC, GET=200, POST=200, PUT=200, PATCH=200, DELETE=200,
                                   uidb64="uidb64", token="token"),
    "password_reset_complete": page(PUBLIC, GET=200),
    # Review queue.
    "review": page(REVIEWER, GET=200),
    "review-decide": page(REVIEWER, POST=REDIRECT, pk="sample"),
    "review-skip": page(REVIEWER, POST=REDIRECT, pk="sample"),
    "review-undo": page(REVIEWER, POST=REDIRECT),
    "review-bulk": page(CURATOR, GET=200, POST=REDIRECT),
    # Lineages, training sets, jobs, dashboard: curators.
    "lineage-list": page(CURATOR, GET=200),
    "lineage-detail": page(CURATOR, GET=200, slug="lineage"),
    "training-set-create": page(CURATOR, POST=REDIRECT, slug="lineage"),
    "lineage-fits": page(CURATOR, GET=200, POST=REDIRECT, slug="lineage"),
    "lineage-reflag": page(CURATOR, POST=REDIRECT, slug="lineage"),
    "training-set-download": page(CURATOR, GET=200, pk="training_set"),
    "training-set-exports": page(CURATOR, GET=200, pk="training_set"),
    "job-start": page(CURATOR, POST=REDIRECT, slug="lineage"),
    "job-progress": page(CURATOR, GET=200, pk="job"),
    "job-cancel": page(CURATOR, POST=REDIRECT, pk="job"),
    "lineage-training": page(CURATOR, GET=200, POST=REDIRECT, slug="lineage"),
    "training-run-progress": page(CURATOR, GET=200, pk="training_run"),
    "training-run-cancel": page(CURATOR, POST=REDIRECT, pk="training_run"),
    "dashboard": page(CURATOR, GET=200),
    "dashboard-live": page(CURATOR, GET=200),
    "generation-detail": page(CURATOR, GET=200, pk="generation"),
    "metrics-recompute": page(CURATOR, POST=REDIRECT, pk="generation"),
    "gate-resume": page(CURATOR, POST=REDIRECT, pk="gate_pause"),
    "sample-detail": page(CURATOR, GET=200, pk="sample"),
    # The API (DRF: session or token auth). Schema and its UIs: any signed-in user.
    "api-schema": api(USER, GET=200),
    "api-docs": api(USER, GET=200),
    "api-redoc": api(USER, GET=200),
    # The rest of the API. JSON bodies only: the empty form body these requests carry gets 415
    # (tests/api/test_roles.py sends real bodies, by token and by session).
    "api-token": api(PUBLIC, POST=400),
    "api-not-found": api(PUBLIC, GET=404, POST=404, PUT=404, PATCH=404, DELETE=404),
    "api-lineages": api(CURATOR, GET=200, POST=415),
    "api-lineage": api(CURATOR, GET=200, PATCH=200, slug="lineage"),
    "api-lineage-overview": api(CURATOR, GET=200, slug="lineage"),
    "api-generations": api(CURATOR, GET=200, slug="lineage"),
    "api-passages": api(CURATOR, GET=200, POST=415, slug="lineage"),
    "api-training-set-plan": api(CURATOR, GET=200, slug="lineage"),
    "api-lineage-flag-fits": api(CURATOR, GET=200, POST=frozenset({202, 409}), slug="lineage"),  # 409: a fit is queued
    "api-generation": api(CURATOR, GET=200, pk="generation"),
    "api-generation-metrics": api(CURATOR, GET=404, pk="generation"),  # none computed yet
    "api-generation-metrics-recompute": api(CURATOR, POST=202, pk="generation"),
    "api-jobs": api(CURATOR, GET=200, POST=415, slug="lineage"),
    "api-job": api(CURATOR, GET=200, pk="job"),
    "api-job-cancel": api(CURATOR, POST=200, pk="job"),
    "api-training-runs": api(CURATOR, POST=415),
    "api-training-run": api(CURATOR, GET=200, pk="training_run"),
    "api-training-run-cancel": api(CURATOR, POST=200, pk="training_run"),
    "api-samples": api(REVIEWER, GET=200, slug="lineage"),
    "api-queue-next": api(REVIEWER, POST=415, slug="lineage"),
    "api-review-undo": api(REVIEWER, POST=409, slug="lineage"),  # nothing of theirs to undo
    "api-sample": api(REVIEWER, GET=200, pk="sample"),
    "api-sample-decide": api(REVIEWER, POST=415, pk="sample"),
    "api-sample-release": api(REVIEWER, POST=409, pk="sample"),  # not leased to them
    "api-training-sets": api(CURATOR, GET=200, POST=415, slug="lineage"),
    "api-training-set": api(CURATOR, GET=200, pk="training_set"),
    "api-exports": api(CURATOR, GET=200, pk="training_set"),
    "api-export-retry": api(CURATOR, POST=409, pk="training_set", fmt="format"),
    "api-training-set-download": api(CURATOR, GET=200, pk="training_set", fmt="format"),
    "api-lineage-imports": api(CURATOR, POST=400, slug="lineage"),
    "api-import": api(CURATOR, GET=200, pk="passage_import"),
    "api-generation-student": api(CURATOR, POST=415, pk="generation"),
}

# The admin is one rule; these stand for all of it.
ADMIN_SAMPLES = [
    ("admin:index", {}),
    ("admin:curation_lineage_changelist", {}),
    ("admin:curation_lineage_change", {"object_id": "lineage_pk"}),
    ("admin:curation_sample_changelist", {}),
    ("admin:auth_user_changelist", {}),
    ("admin:generation_generationjob_changelist", {}),
]

RULE_FILE = "ACCESS in tests/security/test_authz.py"


# Walking the URL configuration ---------------------------------------------


@dataclass(frozen=True)
class Route:
    name: str | None  # with its namespace, e.g. "admin:index"
    route: str
    params: tuple[str, ...]
    view: str

    @property
    def is_admin(self) -> bool:
        return self.route.startswith("admin/")


def _params(pattern) -> list[str]:
    if isinstance(pattern, RoutePattern):
        return list(pattern.converters)
    if isinstance(pattern, RegexPattern):
        return list(pattern.regex.groupindex)
    return []


def walk(patterns=None, namespace: str = "", prefix: str = "", params: tuple = ()) -> list[Route]:
    """Every leaf pattern of the URL configuration, through every include."""
    routes = []
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        here = params + tuple(_params(entry.pattern))
        if isinstance(entry, URLResolver):
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            routes += walk(entry.url_patterns, inner, prefix + str(entry.pattern), here)
        elif isinstance(entry, URLPattern):
            callback = entry.callback
            view = getattr(callback, "view_class", None) or getattr(callback, "cls", None) or callback
            routes.append(Route(f"{namespace}{entry.name}" if entry.name else None, prefix + str(entry.pattern),
                                here, f"{view.__module__}.{view.__qualname__}"))
    return routes


def rule_for(route: Route) -> Rule | None:
    return ADMIN if route.is_admin else ACCESS.get(route.name)


def missing_rules() -> list[str]:
    return [
        f"new view {route.name or '(unnamed)'} at '{route.route}' ({route.view}) has no access rule: add one to "
        f"{RULE_FILE}" + ("" if route.name else " (and give the pattern a name)")
        for route in walk() if rule_for(route) is None
    ]


# The objects that fill URL parameters ----------------------------------------


@pytest.fixture
def world(db, tmp_path, settings, django_capture_on_commit_callbacks):
    """A lineage with a published training set (real files), a pending sample, a job and a gate pause."""
    settings.EXPORT_ROOT = tmp_path / "exports"
    settings.OUROBOROS = {**settings.OUROBOROS, "HEALTH_WORKER_TIMEOUT": 0.2}
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # about access, not hashing
    curator = make_user("carl", CURATOR_GROUP)
    users = {
        "outsider": make_user("olga"),
        "reviewer": make_user("rita", REVIEWER_GROUP),
        "curator": curator,
        "admin": make_user("ada", is_staff=True, is_superuser=True),
    }
    lineage = make_lineage()
    with django_capture_on_commit_callbacks(execute=False):
        for i in range(4):
            sample_accept(sample=make_sample(lineage, question=f"Q{i}?"), reviewer=users["reviewer"])
        training_set = training_set_build(lineage=lineage, built_by=curator, seed=1)
        job = job_create(lineage=lineage, requested=2, created_by=curator)
    for export in training_set.exports.all():
        assert export_run(export_id=export.pk)
    closed = training_set.generation
    pause = GatePause.objects.create(lineage=lineage, generation=closed, reasons=["test"])
    passage_import = PassageImport.objects.create(lineage=lineage, filename="p.jsonl", format="jsonl",
                                                  data=b'{"text": "A passage."}\n', size_bytes=23)
    training_run = TrainingRun.objects.create(lineage=lineage, training_set=training_set,
                                              base_model=base_model_record())
    objects = {
        "lineage": lineage.slug, "lineage_pk": lineage.pk, "sample": make_sample(lineage).pk,
        "training_set": training_set.pk, "job": job.pk, "generation": closed.pk, "gate_pause": pause.pk, "passage_import": passage_import.pk,
        "training_run": training_run.pk, "format": "chat", "uidb64": "MQ", "token": "not-a-valid-token",
    }
    return users, objects


def url_for(name: str, params, objects: dict, rule_objects: dict) -> str:
    missing = [param for param in params if param not in rule_objects]
    assert not missing, f"the rule of {name} does not say what fills {missing}: add e.g. {missing[0]}=\"sample\""
    return reverse(name, kwargs={param: objects[rule_objects[param]] for param in params})


def client_for(users: dict, user: str, **kwargs) -> Client:
    client = Client(**kwargs)
    if user != "anonymous":
        client.force_login(users[user])
    return client


def outcome_matches(response, outcome) -> bool:
    status = response.status_code
    if outcome == LOGIN:
        return status == 302 and response["Location"].startswith(reverse("login"))
    if outcome == ADMIN_LOGIN:
        return status == 302 and response["Location"].startswith(reverse("admin:login"))
    if outcome == REDIRECT:
        return status == 302
    if isinstance(outcome, frozenset):
        return status in outcome
    return status == outcome


def describe(response) -> str:
    location = f" -> {response['Location']}" if response.has_header("Location") else ""
    return f"{response.status_code}{location}"


def unique_routes() -> list[Route]:
    seen, routes = set(), []
    for route in walk():
        if route.is_admin or route.name in seen:
            continue  # the admin has its own test; a shadowed duplicate name reverses to the first
        seen.add(route.name)
        routes.append(route)
    return routes


# Tests ---------------------------------------------------------------------


def test_every_url_pattern_has_an_access_rule():
    missing = missing_rules()
    assert not missing, "\n".join(missing)


def test_the_table_names_only_views_that_exist():
    names = {route.name for route in walk()}
    stale = sorted(set(ACCESS) - names)
    assert not stale, f"rows in {RULE_FILE} for views that no longer exist: {stale}"


def test_a_route_without_a_rule_is_reported_by_name(monkeypatch):
    monkeypatch.delitem(ACCESS, "dashboard")
    assert missing_rules() == [
        "new view dashboard at 'dashboard/' (curation.views.dashboard.dashboard) has no access rule: add one to "
        f"{RULE_FILE}"
    ]


@pytest.mark.parametrize("user", list(USERS))
def test_each_view_answers_each_user_as_its_rule_says(world, user):
    users, objects = world
    wrong = list(missing_rules())
    for route in unique_routes():
        rule = rule_for(route)
        if rule is None:
            continue
        url = url_for(route.name, route.params, objects, rule.objects)
        client = client_for(users, user)  # fresh for each view: a log-out must not leak into the next one
        for method in METHODS:
            response = getattr(client, method.lower())(url)
            expected = rule.expected(user, method)
            if not outcome_matches(response, expected):
                wrong.append(f"{method} {url} ({route.name}) as {user}: got {describe(response)}, "
                             f"the rule says {expected}")
    assert not wrong, f"{len(wrong)} answer(s) differ from {RULE_FILE}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("user", list(USERS))
def test_the_admin_is_for_staff_only(world, user):
    users, objects = world
    client = client_for(users, user)
    for name, params in ADMIN_SAMPLES:
        url = reverse(name, kwargs={param: objects[key] for param, key in params.items()})
        for method in ("GET", "POST") if USERS[user] != STAFF else ("GET",):
            response = getattr(client, method.lower())(url)
            expected = ADMIN.expected(user, method)
            assert outcome_matches(response, expected), \
                f"{method} {url} as {user}: got {describe(response)}, expected {expected}"
