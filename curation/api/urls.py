"""Every API route, mounted at `/api/` by `ouroboros.urls`.

The last route answers every other path under /api/ with a JSON 404, so a
client never gets an HTML page from the API. New routes go above it (and get a
row in tests/api/test_roles.py, which fails for a route without one).
"""
from django.urls import path, re_path

from curation.api import auth, flag_fits, imports, lineages, samples, training_sets
from ouroboros.ratelimit import login_rate_limited

urlpatterns = [
    path("token/", login_rate_limited(auth.ObtainToken.as_view()), name="api-token"),
    # Lineages and their settings, generations, corpus, plan and overview (curators).
    path("lineages/", lineages.LineageList.as_view(), name="api-lineages"),
    path("lineages/<slug:slug>/", lineages.LineageDetail.as_view(), name="api-lineage"),
    path("lineages/<slug:slug>/overview/", lineages.LineageOverview.as_view(), name="api-lineage-overview"),
    path("lineages/<slug:slug>/generations/", lineages.GenerationList.as_view(), name="api-generations"),
    path("lineages/<slug:slug>/passages/", lineages.PassageList.as_view(), name="api-passages"),
    path("lineages/<slug:slug>/plan/", lineages.TrainingSetPlan.as_view(), name="api-training-set-plan"),
    path("lineages/<slug:slug>/flag-fits/", flag_fits.LineageFlagFits.as_view(), name="api-lineage-flag-fits"),
    path("generations/<int:pk>/", lineages.GenerationDetail.as_view(), name="api-generation"),
    path("generations/<int:pk>/metrics/", lineages.GenerationMetricsDetail.as_view(), name="api-generation-metrics"),
    path("generations/<int:pk>/metrics/recompute/", lineages.GenerationMetricsRecompute.as_view(),
         name="api-generation-metrics-recompute"),
    # Jobs, models and training runs are generation's (generation/api/urls.py, mounted ahead of these).
    # Samples and reviews (reviewers).
    path("lineages/<slug:slug>/samples/", samples.SampleList.as_view(), name="api-samples"),
    path("lineages/<slug:slug>/queue/next/", samples.QueueNext.as_view(), name="api-queue-next"),
    path("lineages/<slug:slug>/reviews/undo/", samples.ReviewUndo.as_view(), name="api-review-undo"),
    path("samples/<int:pk>/", samples.SampleDetail.as_view(), name="api-sample"),
    path("samples/<int:pk>/decision/", samples.SampleDecide.as_view(), name="api-sample-decide"),
    path("samples/<int:pk>/release/", samples.SampleRelease.as_view(), name="api-sample-release"),
    # Training sets (curators).
    path("lineages/<slug:slug>/training-sets/", training_sets.TrainingSetList.as_view(), name="api-training-sets"),
    path("training-sets/<int:pk>/", training_sets.TrainingSetDetail.as_view(), name="api-training-set"),
    path("training-sets/<int:pk>/exports/", training_sets.ExportList.as_view(), name="api-exports"),
    path("training-sets/<int:pk>/exports/<str:fmt>/retry/", training_sets.ExportRetry.as_view(),
         name="api-export-retry"),
    path("training-sets/<int:pk>/download/<str:fmt>/", training_sets.TrainingSetDownload.as_view(),
         name="api-training-set-download"),
    # Passage imports (files). `str` converters: a malformed slug or id reaches the view and gets the API's JSON 404,
    # not Django's HTML page.
    path("lineages/<str:slug>/imports/", imports.LineageImportCreate.as_view(), name="api-lineage-imports"),
    path("imports/<str:pk>/", imports.ImportDetail.as_view(), name="api-import"),
    # Keep last.
    re_path(r"^.*$", auth.not_found, name="api-not-found"),
]
