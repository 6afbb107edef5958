"""Training sets over the API: their manifest, export progress and files."""
from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from curation.models import TrainingSet, TrainingSetExport
from curation.views.lineages import training_set_file_response
from curation.api.permissions import IsCurator


def _download_url(request, training_set: TrainingSet, fmt: str) -> str:
    return request.build_absolute_uri(reverse("api-training-set-download", args=[training_set.pk, fmt]))


class TrainingSetDetail(APIView):
    """GET: a set's status, composition (the manifest) and each export's progress and sha256."""

    permission_classes = [IsCurator]

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request, pk: int):
        training_set = get_object_or_404(
            TrainingSet.objects.select_related("lineage", "generation").prefetch_related("exports"), pk=pk
        )
        exports = [
            {
                "format": export.format,
                "status": export.status,
                "rows_written": export.rows_written,
                "rows_total": export.rows_total,
                "progress_percent": export.progress_percent,
                "sha256": export.sha256 or None,
                "bytes": export.size_bytes or None,
                "error": export.error or None,
                "download": _download_url(request, training_set, export.format)
                if export.status == TrainingSetExport.Status.DONE else None,
            }
            for export in training_set.exports.all()
        ]
        published = training_set.status == TrainingSet.Status.PUBLISHED
        return Response({
            "id": training_set.pk,
            "lineage": training_set.lineage.slug,
            "generation": training_set.generation.number,
            "status": training_set.status,
            "seed": training_set.seed,
            "policy": training_set.policy,
            "synthetic": training_set.sample_count,
            "real": training_set.real_count,
            "manifest_sha256": training_set.sha256 or None,
            "manifest": training_set.manifest,
            "manifest_download": _download_url(request, training_set, "manifest") if published else None,
            "exports": exports,
        })


class TrainingSetDownload(APIView):
    """GET: one export file (chat, alpaca, parquet) or the manifest."""

    permission_classes = [IsCurator]

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    def get(self, request, pk: int, fmt: str):
        return training_set_file_response(get_object_or_404(TrainingSet, pk=pk), fmt)
