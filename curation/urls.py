from django.urls import path

from curation.views import dashboard, lineages, review

urlpatterns = [
    path("review/", review.review, name="review"),
    path("review/<int:pk>/decide/", review.review_decide, name="review-decide"),
    path("review/<int:pk>/skip/", review.review_skip, name="review-skip"),
    path("review/undo/", review.review_undo, name="review-undo"),
    path("review/bulk/", review.review_bulk, name="review-bulk"),
    path("lineages/", lineages.lineage_list, name="lineage-list"),
    path("lineages/<slug:slug>/", lineages.lineage_detail, name="lineage-detail"),
    path("lineages/<slug:slug>/training-sets/", lineages.training_set_create, name="training-set-create"),
    path("lineages/<slug:slug>/flag-fits/", lineages.lineage_fits, name="lineage-fits"),
    path("lineages/<slug:slug>/reflag/", lineages.lineage_reflag, name="lineage-reflag"),
    path("training-sets/<int:pk>/download/", lineages.training_set_download, name="training-set-download"),
    path("training-sets/<int:pk>/exports/", lineages.training_set_exports, name="training-set-exports"),
    path("dashboard/", dashboard.dashboard, name="dashboard"),
    path("dashboard/live/", dashboard.dashboard_live, name="dashboard-live"),
    path("dashboard/generations/<int:pk>/", dashboard.generation_detail, name="generation-detail"),
    path("dashboard/generations/<int:pk>/recompute/", dashboard.metrics_recompute, name="metrics-recompute"),
    path("dashboard/gates/<int:pk>/resume/", dashboard.gate_resume_view, name="gate-resume"),
    path("samples/<int:pk>/", dashboard.sample_detail, name="sample-detail"),
]
