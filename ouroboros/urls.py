from django.contrib import admin
from django.urls import include, path

from ouroboros import health, views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("", include("curation.urls")),
    path("", include("generation.urls")),
]
