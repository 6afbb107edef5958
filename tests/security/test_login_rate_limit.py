"""The log-in rate limit: counted per username and per address in the real Redis, shared by every process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from django.conf import settings
from django.contrib.auth import authenticate
from django.test import RequestFactory
from django.urls import reverse

from ouroboros.ratelimit import client_ip, login_failure_record, login_throttled
from tests.factories import make_user

LIMIT = 3


@pytest.fixture(autouse=True)
def limits(settings):
    settings.OUROBOROS = {**settings.OUROBOROS, "LOGIN_FAILURES_PER_USERNAME": LIMIT, "LOGIN_FAILURES_PER_IP": 6,
                          "LOGIN_FAILURE_WINDOW_SECONDS": 60, "TRUSTED_PROXY_COUNT": 0}
    # These tests are about counting attempts, not hashing: a fast hasher keeps each attempt cheap.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def rita(db):
    return make_user("rita")  # password "pw-rita"


def log_in(client, username, password, **extra):
    return client.post(reverse("login"), {"username": username, "password": password}, **extra)


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_a_username_is_refused_after_the_limit_even_with_the_right_password(client, rita):
    for _ in range(LIMIT):
        response = log_in(client, "rita", "wrong")
        assert response.status_code == 200 and "correct username and password" in response.content.decode()
    response = log_in(client, "rita", "pw-rita")
    assert response.status_code == 429
    assert int(response["Retry-After"]) == 60
    assert "Too many failed log-ins for this username" in response.content.decode()
    assert not signed_in(client)


def test_the_username_count_ignores_case_and_other_users_are_not_affected(client, rita, db):
    make_user("sam")
    for username in ("rita", "RITA", " Rita "):
        log_in(client, username, "wrong")
    assert log_in(client, "rita", "pw-rita").status_code == 429
    assert log_in(client, "sam", "pw-sam").status_code == 302 and signed_in(client)


def test_an_address_is_refused_after_its_limit_whatever_username_it_tries(client, rita):
    for number in range(6):
        # Rotating usernames and a forged X-Forwarded-For header do not help: no proxy is trusted.
        log_in(client, f"guess-{number}", "wrong", HTTP_X_FORWARDED_FOR=f"10.0.0.{number}")
    response = log_in(client, "rita", "pw-rita")
    assert response.status_code == 429 and "your network address" in response.content.decode()
    other_address = log_in(client, "rita", "pw-rita", REMOTE_ADDR="192.0.2.7")
    assert other_address.status_code == 302


def test_a_successful_log_in_clears_the_username_count(client, rita):
    for _ in range(LIMIT - 1):
        log_in(client, "rita", "wrong")
    assert log_in(client, "rita", "pw-rita").status_code == 302
    client.logout()
    for _ in range(LIMIT - 1):
        log_in(client, "rita", "wrong")
    assert log_in(client, "rita", "pw-rita").status_code == 302


def test_the_limit_ends_with_its_window(client, rita, settings):
    settings.OUROBOROS = {**settings.OUROBOROS, "LOGIN_FAILURE_WINDOW_SECONDS": 3}
    started = time.monotonic()
    for _ in range(LIMIT):
        login_failure_record(username="rita", ip="198.51.100.3")  # what a failed log-in records, minus the hashing
    assert log_in(client, "rita", "pw-rita").status_code == 429
    assert time.monotonic() - started < 3, "the machine was too slow to see the limit inside its window"
    time.sleep(3.2)  # Redis expires the counter
    assert log_in(client, "rita", "pw-rita").status_code == 302


def test_every_caller_of_authenticate_is_refused_while_the_limit_holds(client, rita):
    for _ in range(LIMIT):
        log_in(client, "rita", "wrong")
    request = RequestFactory().post("/", REMOTE_ADDR="127.0.0.1")
    assert authenticate(request, username="rita", password="pw-rita") is None
    admin = client.post(reverse("admin:login"), {"username": "rita", "password": "pw-rita"})
    assert "Too many failed log-ins" in admin.content.decode() and not signed_in(client)


def test_the_count_is_in_redis_where_another_process_sees_it(rita):
    for _ in range(LIMIT):
        login_failure_record(username="rita", ip="203.0.113.9")
    assert login_throttled(username="rita", ip="") is not None
    probe = ("import django, json; django.setup(); from ouroboros.ratelimit import login_throttled as t; "
             "print(json.dumps([bool(t(username='rita', ip='')), bool(t(username='sam', ip=''))]))")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "ouroboros.settings",
           "OUROBOROS_CACHE_URL": settings.CACHES["default"]["LOCATION"],
           "OUROBOROS_CACHE_KEY_PREFIX": settings.CACHES["default"]["KEY_PREFIX"],
           "OUROBOROS_LOGIN_FAILURES_PER_USERNAME": str(LIMIT)}
    result = subprocess.run([sys.executable, "-c", probe], env=env, cwd=settings.BASE_DIR, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [True, False]


def test_the_api_token_endpoint_answers_429_json_once_the_limit_holds(client, rita):
    url = reverse("api-token")
    for _ in range(LIMIT):
        response = client.post(url, {"username": "rita", "password": "wrong"}, content_type="application/json")
        assert response.status_code == 400
    response = client.post(url, {"username": "rita", "password": "pw-rita"}, content_type="application/json")
    assert response.status_code == 429 and response["Retry-After"] == "60"
    assert response.json()["code"] == "too_many_attempts" and response.json()["status"] == 429
    assert "Too many failed log-ins for this username" in response.json()["detail"]
    other = client.post(url, {"username": "sam", "password": "x"}, content_type="application/json")
    assert other.status_code == 400, "another username from the same address is still under its limit"


def test_with_redis_unreachable_log_ins_still_work_and_nothing_crashes(client, rita, settings):
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"}}
    assert log_in(client, "rita", "wrong").status_code == 200
    assert log_in(client, "rita", "pw-rita").status_code == 302 and signed_in(client)


@pytest.mark.parametrize("proxies,forwarded,expected", [
    (0, "198.51.100.1", "127.0.0.1"),  # no trusted proxy: the header is the client's to forge
    (1, "198.51.100.1", "198.51.100.1"),
    (1, "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # the forged entry is left of ours
    (2, "6.6.6.6, 198.51.100.1, 10.0.0.2", "198.51.100.1"),
    (2, "198.51.100.1", "127.0.0.1"),  # fewer entries than proxies: not through our proxies
])
def test_the_client_address_trusts_only_our_own_proxies(settings, proxies, forwarded, expected):
    settings.OUROBOROS = {**settings.OUROBOROS, "TRUSTED_PROXY_COUNT": proxies}
    request = RequestFactory().get("/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=forwarded)
    assert client_ip(request) == expected
