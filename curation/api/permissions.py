"""The API's role checks: the same functions the pages use (`ouroboros.roles`)."""
from __future__ import annotations

from rest_framework.permissions import BasePermission

from ouroboros.roles import user_is_curator, user_is_reviewer


class IsReviewer(BasePermission):
    message = "Your account does not have the reviewer role this endpoint needs."

    def has_permission(self, request, view) -> bool:
        return user_is_reviewer(request.user)


class IsCurator(BasePermission):
    message = "Your account does not have the curator role this endpoint needs."

    def has_permission(self, request, view) -> bool:
        return user_is_curator(request.user)
