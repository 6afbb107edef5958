"""Roles and the checks every view makes on the server.

Two groups carry the roles: `reviewer` works the queue, `curator` runs jobs
and builds training sets (and may review too). Superusers are admins and may
do everything. Checks live here so that a view, a partial and an API view all
refuse the same people.
"""
from __future__ import annotations

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied

REVIEWER = "reviewer"
CURATOR = "curator"


def _group_names(user) -> frozenset[str]:
    """The user's group names, read once per user object: a request's user is
    loaded fresh, so the view's check and the template's two cost one query."""
    names = getattr(user, "_ouroboros_group_names", None)
    if names is None:
        names = frozenset(user.groups.values_list("name", flat=True))
        user._ouroboros_group_names = names
    return names


def user_is_curator(user) -> bool:
    return bool(user.is_authenticated and user.is_active and (user.is_superuser or CURATOR in _group_names(user)))


def user_is_reviewer(user) -> bool:
    return bool(
        user.is_authenticated
        and user.is_active
        and (user.is_superuser or bool(_group_names(user) & {REVIEWER, CURATOR}))
    )


def _role_required(check):
    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not check(request.user):
                raise PermissionDenied("Your account does not have the role this page needs.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


reviewer_required = _role_required(user_is_reviewer)
curator_required = _role_required(user_is_curator)


def roles_context(request) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"is_reviewer": False, "is_curator": False}
    return {"is_reviewer": user_is_reviewer(user), "is_curator": user_is_curator(user)}
