"""Training sets over the API: build (then the exports publish the set), list, exports, files.

A set is published by the exports themselves: building freezes the membership
and queues one export per format; when the last file is written the set is
published with its checksummed manifest (as on the lineage page).
"""
from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.response import Response
from rest_framework.views import APIView

from curation.api import serializers as s
from curation.api.common import get_lineage, get_object
from curation.api.errors import Conflict
from curation.api.lineages import SLUG
from curation.api.permissions import IsCurator
from curation.api.responses import BAD_REQUEST, CONFLICT, NOT_FOUND, errors
from curation.models import TrainingSet, TrainingSetExport
from curation.services.exports import CONTENT_TYPE, export_retry
from curation.services.training_sets import PolicyViolation, TrainingSetError, training_set_build
from curation.views.lineages import training_set_file_response

FORMAT = OpenApiParameter("fmt", str, OpenApiParameter.PATH, enum=[*TrainingSetExport.Format.values, "manifest"],
                          description="An export format, or `manifest`.")
EXPORT_FORMAT = OpenApiParameter("fmt", str, OpenApiParameter.PATH, enum=TrainingSetExport.Format.values)


def _sets():
    return TrainingSet.objects.select_related("lineage", "generation", "built_by").prefetch_related("exports")


class TrainingSetList(APIView):
    permission_classes = [IsCurator]

    @extend_schema(summary="A lineage's training sets, newest first", parameters=[SLUG],
                   responses={200: s.TrainingSetSerializer(many=True), **errors(NOT_FOUND)})
    def get(self, request, slug: str):
        sets = _sets().filter(lineage=get_lineage(slug)).order_by("-generation__number")
        return Response(s.TrainingSetSerializer(sets, many=True, context={"request": request}).data)

    @extend_schema(summary="Build the open generation's training set",
                   description="Freezes accepted samples plus real passages under the lineage's policy, closes the "
                               "generation, opens the next and queues the exports; the set is published when they are "
                               "written. 409 naming every broken rule when the policy refuses, or while a job runs.",
                   parameters=[SLUG], request=s.TrainingSetBuildSerializer,
                   responses={201: s.TrainingSetSerializer, **errors(BAD_REQUEST, NOT_FOUND, CONFLICT)})
    def post(self, request, slug: str):
        lineage = get_lineage(slug)
        data = s.TrainingSetBuildSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            training_set = training_set_build(lineage=lineage, built_by=request.user, **data.validated_data)
        except PolicyViolation as exc:
            raise Conflict(f"the policy refuses this set: {exc}",
                           errors=[{"field": f"policy.{b.rule}", "message": b.message} for b in exc.breaches]) from None
        except TrainingSetError as exc:
            raise Conflict(str(exc)) from None
        return Response(s.TrainingSetSerializer(_sets().get(pk=training_set.pk), context={"request": request}).data,
                        status=status.HTTP_201_CREATED)


class TrainingSetDetail(APIView):
    permission_classes = [IsCurator]

    @extend_schema(summary="A training set: status, manifest and each export's progress and sha256",
                   responses={200: s.TrainingSetSerializer, **errors(NOT_FOUND)})
    def get(self, request, pk: int):
        training_set = get_object(_sets(), "training set", pk=pk)
        return Response(s.TrainingSetSerializer(training_set, context={"request": request}).data)


class ExportList(APIView):
    permission_classes = [IsCurator]

    @extend_schema(summary="A training set's exports", responses={200: s.ExportSerializer(many=True),
                                                                  **errors(NOT_FOUND)})
    def get(self, request, pk: int):
        training_set = get_object(_sets(), "training set", pk=pk)
        return Response(s.ExportSerializer(training_set.exports.all(), many=True, context={"request": request}).data)


class ExportRetry(APIView):
    permission_classes = [IsCurator]

    @extend_schema(summary="Queue a failed export again", parameters=[EXPORT_FORMAT], request=None,
                   responses={202: s.ExportSerializer, **errors(NOT_FOUND, CONFLICT)})
    def post(self, request, pk: int, fmt: str):
        training_set = get_object(_sets(), "training set", pk=pk)
        export = get_object(training_set.exports.all(), f"{fmt!r} export of training set {pk}:", format=fmt)
        if not export_retry(export=export):
            raise Conflict(f"the {fmt} export is {export.status}; only a failed export is queued again")
        export.refresh_from_db()
        return Response(s.ExportSerializer(export, context={"request": request}).data, status=status.HTTP_202_ACCEPTED)


class FilesAnyAccept(DefaultContentNegotiation):
    """A file is sent as what it is whatever Accept says; errors still come back as JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            return renderers[0], renderers[0].media_type


class TrainingSetDownload(APIView):
    """GET: one export file (chat, alpaca, parquet) or the manifest."""

    permission_classes = [IsCurator]

    content_negotiation_class = FilesAnyAccept

    @extend_schema(summary="Download an export file or the manifest", parameters=[FORMAT], responses={
        **{(200, content_type): OpenApiResponse(OpenApiTypes.BINARY, description="The file, as an attachment.")
           for content_type in sorted(set(CONTENT_TYPE.values()))},
        (200, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT, description="The manifest."),
        **errors(NOT_FOUND)})
    def get(self, request, pk: int, fmt: str):
        return training_set_file_response(get_object(TrainingSet.objects.all(), "training set", pk=pk), fmt)
