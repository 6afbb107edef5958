from django.urls import path

from curation import api, dashboard_views, views

urlpatterns = [
    path("review/", views.review, name="review"),
    path("review/<int:pk>/decide/", views.review_decide, name="review-decide"),
    path("review/<int:pk>/skip/", views.review_skip, name="review-skip"),
    path("review/undo/", views.review_undo, name="review-undo"),
    path("review/bulk/", views.review_bulk, name="review-bulk"),
    path("lineages/", views.lineage_list, name="lineage-list"),
    path("lineages/<slug:slug>/", views.lineage_detail, name="lineage-detail"),
    path("lineages/<slug:slug>/training-sets/", views.training_set_create, name="training-set-create"),
    path("training-sets/<int:pk>/download/", views.training_set_download, name="training-set-download"),
    path("training-sets/<int:pk>/exports/", views.training_set_exports, name="training-set-exports"),
    path("dashboard/", dashboard_views.dashboard, name="dashboard"),
    path("dashboard/live/", dashboard_views.dashboard_live, name="dashboard-live"),
    path("dashboard/generations/<int:pk>/", dashboard_views.generation_detail, name="generation-detail"),
    path("dashboard/generations/<int:pk>/recompute/", dashboard_views.metrics_recompute, name="metrics-recompute"),
    path("dashboard/gates/<int:pk>/resume/", dashboard_views.gate_resume_view, name="gate-resume"),
    path("samples/<int:pk>/", dashboard_views.sample_detail, name="sample-detail"),
    path("api/training-sets/<int:pk>/", api.TrainingSetDetail.as_view(), name="api-training-set"),
    path("api/training-sets/<int:pk>/download/<str:fmt>/", api.TrainingSetDownload.as_view(),
         name="api-training-set-download"),
]
