"""The app's URLs plus `/bench/ok`: the cheapest page a logged-in reviewer can ask for.

It goes through the same middleware, session and role check as the review
queue and renders nothing, so the load test can tell what the queue itself
costs from what any request to this server costs.
"""
from django.http import HttpResponse
from django.urls import path

from ouroboros.roles import reviewer_required
from ouroboros.urls import urlpatterns as app_urlpatterns


@reviewer_required
def ok(request):
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [path("bench/ok", ok, name="bench-ok"), *app_urlpatterns]
