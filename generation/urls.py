from django.urls import path

from generation import views

urlpatterns = [
    path("lineages/<slug:slug>/jobs/", views.job_start, name="job-start"),
    path("jobs/<int:pk>/progress/", views.job_progress, name="job-progress"),
    path("jobs/<int:pk>/cancel/", views.job_stop, name="job-cancel"),
]
