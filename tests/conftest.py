"""Shared fixtures: a few named users and a lineage with real passages.

The suite runs against the real PostgreSQL (with pgvector) and Redis that
`make test` starts or that DATABASE_URL / CELERY_BROKER_URL name.
"""
from __future__ import annotations

import uuid

import pytest

from tests.factories import CURATOR, REVIEWER, make_lineage, make_user


@pytest.fixture
def reviewer(db):
    return make_user("rita", REVIEWER)


@pytest.fixture
def curator(db):
    return make_user("carl", CURATOR)


@pytest.fixture
def outsider(db):
    """Logged in, but with no role: every curation page must refuse them."""
    return make_user("olga")


@pytest.fixture
def lineage(db):
    return make_lineage()


@pytest.fixture
def reviewer_client(client, reviewer):
    client.force_login(reviewer)
    return client


@pytest.fixture
def curator_client(client, curator):
    client.force_login(curator)
    return client


@pytest.fixture(autouse=True)
def _own_cache_namespace(settings):
    """Each test counts (failed log-ins, ...) from zero: a key prefix of its own in the shared Redis cache."""
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"test-{uuid.uuid4().hex}"}}
