"""Passage imports over the API: upload a file into a lineage, then follow its progress."""
from __future__ import annotations

from django.conf import settings
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from curation.api.permissions import IsCurator
from curation.models import Lineage, PassageImport
from curation.services.imports import ImportRequestError, import_create

# Room for the multipart envelope (boundaries, headers, the other fields) around the file itself.
MULTIPART_SLACK_BYTES = 64 * 1024


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The upload is too large."
    default_code = "too_large"


class ImportUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="A .jsonl, .csv or .parquet file of passages: `text` (required), "
                                           "`title` (optional); other fields are ignored.")
    skip_bad_lines = serializers.BooleanField(
        required=False, default=False,
        help_text="Import the good rows and report the bad ones in `skipped`, instead of failing the whole import.",
    )


class ImportRowErrorSerializer(serializers.Serializer):
    line = serializers.IntegerField(allow_null=True, help_text="1-based line (CSV: the header is line 1; "
                                                               "Parquet: the row number); null for the whole file.")
    field = serializers.CharField(allow_null=True, help_text="The field at fault, when one is.")
    error = serializers.CharField()


class PassageImportSerializer(serializers.ModelSerializer):
    lineage = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    url = serializers.SerializerMethodField()
    skipped = ImportRowErrorSerializer(many=True, read_only=True)
    errors = ImportRowErrorSerializer(many=True, read_only=True)
    ignored_columns = serializers.ListField(child=serializers.CharField(), read_only=True,
                                            help_text="Fields of the file other than text and title.")

    class Meta:
        model = PassageImport
        fields = ["id", "url", "lineage", "filename", "format", "size_bytes", "skip_bad_lines", "status",
                  "rows_total", "rows_done", "imported", "duplicates", "skipped", "skipped_total", "errors",
                  "errors_total", "ignored_columns", "created_at", "started_at", "finished_at"]
        read_only_fields = fields

    def get_url(self, obj: PassageImport) -> str:
        path = reverse("api-import", args=[obj.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField()


class ImportBadRequestSerializer(serializers.Serializer):
    detail = serializers.CharField(required=False, help_text="A request that could not be parsed at all.")
    file = serializers.ListField(child=serializers.CharField(), required=False)
    skip_bad_lines = serializers.ListField(child=serializers.CharField(), required=False)


def _refuse_oversized(request) -> None:
    """413 from the Content-Length header alone, before a byte of the body is read."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return
    if length > settings.OUROBOROS["IMPORT_MAX_BYTES"] + MULTIPART_SLACK_BYTES:
        raise PayloadTooLarge(f"the request is {length} bytes; the limit for an import file is "
                              f"{settings.OUROBOROS['IMPORT_MAX_BYTES']} bytes")


class LineageImportCreate(APIView):
    """POST: upload a file of passages into a lineage; the import runs as a task (202)."""

    permission_classes = [IsCurator]
    parser_classes = [MultiPartParser, FormParser]

    def initial(self, request, *args, **kwargs):
        # Before authentication: session auth's CSRF check reads the body (request.POST).
        _refuse_oversized(request)
        super().initial(request, *args, **kwargs)

    @extend_schema(
        operation_id="lineage_import_create",
        summary="Import passages from a JSONL, CSV or Parquet file",
        request={"multipart/form-data": ImportUploadSerializer},
        responses={
            202: PassageImportSerializer,
            400: OpenApiResponse(ImportBadRequestSerializer, description="No file, an unsupported or empty file, "
                                                                         "or text that is not UTF-8."),
            403: OpenApiResponse(DetailSerializer, description="Not logged in, or not a curator."),
            404: OpenApiResponse(DetailSerializer, description="No lineage with this slug."),
            413: OpenApiResponse(DetailSerializer, description="The file is over IMPORT_MAX_BYTES."),
            415: OpenApiResponse(DetailSerializer, description="The body is not multipart/form-data."),
        },
        tags=["imports"],
    )
    def post(self, request, slug: str):
        lineage = get_object_or_404(Lineage, slug=slug)
        form = ImportUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        upload = form.validated_data["file"]
        try:
            job = import_create(lineage=lineage, upload=upload, user=request.user,
                                skip_bad_lines=form.validated_data["skip_bad_lines"])
        except ImportRequestError as exc:
            if exc.too_large:
                raise PayloadTooLarge(str(exc)) from None
            raise ValidationError({exc.field: [str(exc)]}) from None
        body = PassageImportSerializer(job, context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})


class ImportDetail(APIView):
    """GET: an import's status, progress, counts and the errors or skipped rows, each with its line."""

    permission_classes = [IsCurator]

    @extend_schema(
        operation_id="import_retrieve",
        summary="An import's status and progress",
        parameters=[OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH, description="The import's id.")],
        responses={
            200: PassageImportSerializer,
            403: OpenApiResponse(DetailSerializer, description="Not logged in, or not a curator."),
            404: OpenApiResponse(DetailSerializer, description="No import with this id."),
        },
        tags=["imports"],
    )
    def get(self, request, pk: str):
        if not pk.isascii() or not pk.isdigit():
            raise Http404("No import with this id.")
        job = get_object_or_404(PassageImport.objects.defer("data").select_related("lineage"), pk=int(pk))
        return Response(PassageImportSerializer(job, context={"request": request}).data)
