from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from ouroboros import health, views
from ouroboros.ratelimit import RateLimitedAdminAuthenticationForm, RateLimitedLoginView

# The admin's log-in form says so when the log-in rate limit refuses an attempt.
admin.site.login_form = RateLimitedAdminAuthenticationForm

# An oversized or malformed request body gets a 400 that names the limit it broke.
handler400 = "ouroboros.views.bad_request"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    # Ahead of django.contrib.auth.urls: the same log-in page, rate-limited.
    path("accounts/login/", RateLimitedLoginView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    # generation's routes first: curation's end with the catch-all JSON 404.
    path("api/", include("generation.api.urls")),
    path("api/", include("curation.api.urls")),
    path("", include("curation.urls")),
    path("", include("generation.urls")),
]
