"""Getting an API token, and the JSON 404 for paths the API does not have."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.decorators import api_view, authentication_classes, permission_classes, schema
from rest_framework.exceptions import NotFound

from curation.api.responses import BAD_REQUEST, THROTTLED


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Send it as `Authorization: Token <token>`.")


class ObtainToken(ObtainAuthToken):
    """POST username and password, get the account's token (created on first use).

    Routed through `ouroboros.ratelimit.login_rate_limited`: failed attempts
    count against the same per-username and per-address limits as the log-in page.
    """

    @extend_schema(summary="Get your API token", description="Send your username and password (form or JSON); the "
                   "token carries your account's roles. `manage.py drf_create_token <username>` makes one too.",
                   auth=[], responses={200: TokenSerializer, **BAD_REQUEST, **THROTTLED})
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)


@api_view(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
@authentication_classes([])
@permission_classes([])
@schema(None)
def not_found(request, *args, **kwargs):
    raise NotFound(f"no API endpoint at {request.path}; see /api/schema/ for the ones there are")
