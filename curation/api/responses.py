"""Error responses for the schema: every endpoint says which of these it can answer."""
from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse

from curation.api.errors import ErrorSerializer


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


BAD_REQUEST = {400: _error("Invalid input; `errors` names each field (with the item index for batches).")}
AUTH = {
    401: _error("No credentials, or a wrong token."),
    403: _error("Your account lacks the role, or a CSRF check failed for a session request."),
}
NOT_FOUND = {404: _error("No such object.")}
CONFLICT = {409: _error("The object's state forbids this now (the detail says why).")}
THROTTLED = {429: _error("Too many failed log-ins for this username or address; Retry-After says when to try again.")}


def errors(*kinds: dict) -> dict:
    """The error responses of an endpoint: always 401 and 403, plus the given ones."""
    merged = dict(AUTH)
    for kind in kinds:
        merged.update(kind)
    return merged
