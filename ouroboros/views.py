from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpResponseBadRequest
from django.shortcuts import redirect
from django.views.decorators.http import require_safe

from ouroboros.roles import user_is_curator


@login_required
@require_safe
def home(request):
    """Curators land on their lineages, everyone else on the review queue."""
    return redirect("lineage-list" if user_is_curator(request.user) else "review")


def _limit_broken(exception) -> str:
    if isinstance(exception, RequestDataTooBig):
        return (f"The request body is larger than the {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,}-byte limit "
                "(DJANGO_DATA_UPLOAD_MAX_MEMORY_SIZE); nothing was saved.")
    if isinstance(exception, TooManyFieldsSent):
        return (f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS:,} fields "
                "(DJANGO_DATA_UPLOAD_MAX_NUMBER_FIELDS); nothing was saved.")
    if isinstance(exception, TooManyFilesSent):
        return (f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FILES:,} files "
                "(DJANGO_DATA_UPLOAD_MAX_NUMBER_FILES); nothing was saved.")
    return "The request was refused as malformed or unsafe; nothing was saved."


def bad_request(request, exception=None):
    """400: say which limit the request broke, in plain text (the body is never echoed back)."""
    return HttpResponseBadRequest(_limit_broken(exception) + "\n", content_type="text/plain; charset=utf-8")
