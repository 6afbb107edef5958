"""generation's API routes, mounted at `/api/` by `ouroboros.urls` before curation's (which ends in the
catch-all JSON 404). Each new route gets a row in tests/api/test_roles.py and tests/security/test_authz.py."""
from django.urls import path

from generation.api import jobs, training

urlpatterns: list = [
    # Jobs (curators).
    path("lineages/<slug:slug>/jobs/", jobs.JobList.as_view(), name="api-jobs"),
    path("jobs/<int:pk>/", jobs.JobDetail.as_view(), name="api-job"),
    path("jobs/<int:pk>/cancel/", jobs.JobCancel.as_view(), name="api-job-cancel"),
    # Training runs of the built-in trainer (curators).
    path("training-runs/", training.TrainingRunList.as_view(), name="api-training-runs"),
    path("training-runs/<int:pk>/", training.TrainingRunDetail.as_view(), name="api-training-run"),
    path("training-runs/<int:pk>/cancel/", training.TrainingRunCancel.as_view(), name="api-training-run-cancel"),
]
