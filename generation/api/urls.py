"""generation's API routes, mounted at `/api/` by `ouroboros.urls` before curation's (which ends in the
catch-all JSON 404). Each new route gets a row in tests/api/test_roles.py and tests/security/test_authz.py."""
from django.urls import path  # noqa: F401

urlpatterns: list = [
]
