"""What every API view shares: fetching objects by id safely, cursor pagination, role checks."""
from __future__ import annotations

import math

from django.shortcuts import get_object_or_404
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination

from curation.models import Lineage

MAX_ID = 2**63 - 1  # PostgreSQL's bigint: a larger id can name nothing, and must not reach the database


def get_object(queryset, what: str, **lookup):
    """The object or a 404 naming what was looked for; ids out of range are a 404, never a database error."""
    for value in lookup.values():
        if isinstance(value, int) and not 0 < value <= MAX_ID:
            raise NotFound(f"no {what} {value}")
    try:
        return get_object_or_404(queryset, **lookup)
    except Exception as exc:  # Http404 from get_object_or_404
        if exc.__class__.__name__ == "Http404":
            shown = ", ".join(str(v) for v in lookup.values())
            raise NotFound(f"no {what} {shown}") from None
        raise


def get_lineage(slug: str) -> Lineage:
    return get_object(Lineage.objects.all(), "lineage", slug=slug)


class IdCursorPagination(CursorPagination):
    """Keyset pages over an indexed column: page 10^4 costs what page 1 costs.

    A cursor that was tampered with, or names a position of the wrong type, is a
    400 naming `cursor` (DRF's default answers 404, and would pass a bad position
    on to the database).
    """

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
    ordering = ("id",)
    # The type of each ordering column's cursor position, to check it before it reaches the database.
    position_types = {"id": int, "risk": float}

    def get_ordering(self, request, queryset, view):
        chosen = getattr(view, "cursor_ordering", None)
        return chosen(request) if chosen else self.ordering

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not raw.isdigit() or not 1 <= int(raw) <= self.max_page_size:
            raise ValidationError({self.page_size_query_param: [f"a whole number from 1 to {self.max_page_size}"]})
        return int(raw)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update({"minimum": 1, "maximum": self.max_page_size, "default": self.page_size})
        return parameters

    def decode_cursor(self, request):
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            raise ValidationError({self.cursor_query_param: ["This cursor is not valid; use the `next` or "
                                                              "`previous` link of a page as it was given."]})
        if cursor is not None and cursor.position is not None:
            column = self.ordering[0].lstrip("-")
            kind = self.position_types.get(column, str)
            try:
                value = kind(cursor.position)
            except (TypeError, ValueError):
                value = None
            if value is None or (kind is float and not math.isfinite(value)) or (kind is int and abs(value) > MAX_ID):
                raise ValidationError({self.cursor_query_param: ["This cursor does not fit this list's ordering; "
                                                                  "start again without a cursor."]})
        return cursor
