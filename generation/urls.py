from django.urls import path

from generation import training_pages, views

urlpatterns = [
    path("lineages/<slug:slug>/jobs/", views.job_start, name="job-start"),
    path("jobs/<int:pk>/progress/", views.job_progress, name="job-progress"),
    path("jobs/<int:pk>/cancel/", views.job_stop, name="job-cancel"),
    path("lineages/<slug:slug>/training/", training_pages.lineage_training, name="lineage-training"),
    path("training-runs/<int:pk>/progress/", training_pages.training_run_progress, name="training-run-progress"),
    path("training-runs/<int:pk>/cancel/", training_pages.training_run_stop, name="training-run-cancel"),
]
