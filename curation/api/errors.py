"""One shape for every API error, and the mapping from the services' errors to it.

Every error body is
    {"status": 400, "code": "invalid", "detail": "<one sentence>",
     "errors": [{"field": "passages[2].text", "message": "This field is required."}]}
`errors` names each field (or item of a batch, by index) that was wrong; it is
empty when the error is about the request as a whole (401, 403, 404, 409).
"""
from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions, serializers, status
from rest_framework.views import exception_handler as drf_exception_handler


class Conflict(exceptions.APIException):
    """The request is well formed but the object's state forbids it (already decided, still running...)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state of the resource."
    default_code = "conflict"

    def __init__(self, detail=None, *, errors: list[dict] | None = None):
        super().__init__(detail)
        self.errors = errors or []


class ErrorItemSerializer(serializers.Serializer):
    field = serializers.CharField(help_text="The field, with the item index for batches, e.g. `passages[2].text`; "
                                            "`non_field_errors` for the request as a whole.")
    message = serializers.CharField()


class ErrorSerializer(serializers.Serializer):
    status = serializers.IntegerField()
    code = serializers.CharField(help_text="`invalid`, `parse_error`, `not_authenticated`, `permission_denied`, "
                                           "`not_found`, `conflict`, `method_not_allowed`, `unsupported_media_type`...")
    detail = serializers.CharField()
    errors = ErrorItemSerializer(many=True)


def _flatten(detail, prefix: str = "") -> list[dict]:
    """DRF's nested error dict/list into [{"field": "a[1].b", "message": ...}]."""
    if isinstance(detail, dict):
        items = []
        for key, value in detail.items():
            # DRF keys a list's item errors by their index (an int): name them `passages[1]`.
            if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
                name = f"{prefix}[{key}]"
            elif key == "non_field_errors" and prefix:
                name = prefix  # an error about the field as a whole (e.g. not a list)
            else:
                name = str(key) if not prefix else f"{prefix}.{key}"
            items += _flatten(value, name)
        return items
    if isinstance(detail, list):
        if all(not isinstance(item, (dict, list)) for item in detail):
            return [{"field": prefix or "non_field_errors", "message": str(item)} for item in detail]
        items = []
        for index, value in enumerate(detail):
            if isinstance(value, (dict, list)):
                items += _flatten(value, f"{prefix}[{index}]")
            else:
                items.append({"field": prefix or "non_field_errors", "message": str(value)})
        return items
    return [{"field": prefix or "non_field_errors", "message": str(detail)}]


def exception_handler(exc, context):
    """REST_FRAMEWORK["EXCEPTION_HANDLER"]: DRF's handling, then every error in the one shape above."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or None)
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a real bug: let it be a 500 with its traceback in the log
    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        first = errors[0] if errors else {"field": "non_field_errors", "message": "invalid input"}
        detail = (f"{first['field']}: {first['message']}" if first["field"] != "non_field_errors"
                  else first["message"])
        code = "invalid"
    else:
        detail = str(exc.detail) if not isinstance(exc.detail, (dict, list)) else "; ".join(
            f"{item['field']}: {item['message']}" for item in _flatten(exc.detail))
        errors = getattr(exc, "errors", [])
        code = getattr(exc, "default_code", "error")
        codes = exc.get_codes() if hasattr(exc, "get_codes") else None
        if isinstance(codes, str):
            code = codes
    response.data = {"status": response.status_code, "code": code, "detail": detail, "errors": errors}
    return response


def field_error(field: str, message: str) -> exceptions.ValidationError:
    """A 400 naming one field, for errors a service reports after the serializer passed."""
    return exceptions.ValidationError({field: [message]})
