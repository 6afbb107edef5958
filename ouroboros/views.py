from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect
from django.views.decorators.http import require_safe

from ouroboros.roles import user_is_curator


@login_required
@require_safe
def home(request):
    """Curators land on their lineages, everyone else on the review queue."""
    return redirect("lineage-list" if user_is_curator(request.user) else "review")
