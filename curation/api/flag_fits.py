"""A lineage's own flag models (fitted on its review decisions): read them, or fit now."""
from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from curation import selectors
from curation.api.common import get_lineage
from curation.api.errors import Conflict
from curation.api.permissions import IsCurator
from curation.api.responses import CONFLICT, NOT_FOUND, errors
from curation.models import LineageFit
from curation.services.lineage_fit import LineageFitError, lineage_fit_request

SLUG = OpenApiParameter("slug", str, OpenApiParameter.PATH, description="The lineage's slug.")


class LineageFitSerializer(serializers.ModelSerializer):
    class Meta:
        model = LineageFit
        fields = ["id", "kind", "status", "decisions", "positives", "left_out", "lineage_auc", "default_auc",
                  "lineage_brier", "default_brier", "reliability", "adopted", "reason", "default_version",
                  "previous_version", "detector_version", "last_error", "created_at", "finished_at"]


class FlagFitKindSerializer(serializers.Serializer):
    kind = serializers.CharField()
    latest = LineageFitSerializer(allow_null=True, help_text="The latest fit, whatever its status.")
    deciding = LineageFitSerializer(allow_null=True, help_text="The latest finished fit: adopted, its model scores "
                                                               "this kind's flags; else the default does.")


class FlagFitsSerializer(serializers.Serializer):
    kinds = FlagFitKindSerializer(many=True)
    reflag_offered = serializers.BooleanField(help_text="A fit changed a detector version and no re-flag started since.")
    fitting = serializers.BooleanField()


def _body(lineage) -> dict:
    overview = selectors.lineage_fits_overview(lineage=lineage)
    return FlagFitsSerializer(overview).data


class LineageFlagFits(APIView):
    permission_classes = [IsCurator]

    @extend_schema(summary="The lineage's own flag models", parameters=[SLUG],
                   description="Per kind, the fits on the review decisions: both cross-validated ROC-AUCs, the "
                               "number of decisions, the reliability bins, and which detector is in force.",
                   responses={200: FlagFitsSerializer, **errors(NOT_FOUND)})
    def get(self, request, slug: str):
        return Response(_body(get_lineage(slug)))

    @extend_schema(summary="Fit the lineage's flag models now", parameters=[SLUG], request=None,
                   description="Queues a fit of each kind on the curation queue; poll GET. A fit that is adopted "
                               "changes new flags at once and existing ones after a re-flag.",
                   responses={202: FlagFitsSerializer, **errors(NOT_FOUND, CONFLICT)})
    def post(self, request, slug: str):
        lineage = get_lineage(slug)
        try:
            lineage_fit_request(lineage=lineage, created_by=request.user)
        except LineageFitError as exc:
            raise Conflict(str(exc)) from None
        return Response(_body(lineage), status=status.HTTP_202_ACCEPTED)
