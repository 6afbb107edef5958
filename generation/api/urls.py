"""generation's API routes, mounted at `/api/` by `ouroboros.urls` before curation's (which ends in the
catch-all JSON 404). Each new route gets a row in tests/api/test_roles.py and tests/security/test_authz.py."""
from django.urls import path

from generation.api import training

urlpatterns: list = [
    # Training runs of the built-in trainer (curators).
    path("training-runs/", training.TrainingRunList.as_view(), name="api-training-runs"),
    path("training-runs/<int:pk>/", training.TrainingRunDetail.as_view(), name="api-training-run"),
    path("training-runs/<int:pk>/cancel/", training.TrainingRunCancel.as_view(), name="api-training-run-cancel"),
]
