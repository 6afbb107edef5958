"""Generation jobs over the API: start one (as the lineage page's form does), watch it, cancel it."""
from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from curation.api.common import IdCursorPagination, get_lineage, get_object
from curation.api.errors import Conflict, field_error
from curation.api.lineages import SLUG
from curation.api.permissions import IsCurator
from curation.api.responses import BAD_REQUEST, CONFLICT, NOT_FOUND, errors
from generation.api import serializers as s
from generation.models import GenerationJob
from generation.services import JobError, job_cancel, job_create

STATUS = OpenApiParameter("status", str, enum=GenerationJob.Status.values, required=False,
                          description="Only jobs in this state.")


def _jobs():
    return GenerationJob.objects.select_related("lineage", "generation", "created_by")


class NewestFirst(IdCursorPagination):
    ordering = ("-id",)


class JobList(ListAPIView):
    permission_classes = [IsCurator]
    serializer_class = s.JobSerializer
    pagination_class = NewestFirst

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular reading the view for the schema
            return GenerationJob.objects.none()
        jobs = _jobs().filter(lineage=get_lineage(self.kwargs["slug"]))
        wanted = self.request.query_params.get("status")
        if wanted is not None:
            if wanted not in GenerationJob.Status.values:
                raise field_error("status", f"unknown status {wanted!r}; use {', '.join(GenerationJob.Status.values)}")
            jobs = jobs.filter(status=wanted)
        return jobs

    @extend_schema(summary="A lineage's jobs, newest first", parameters=[SLUG, STATUS],
                   responses={200: s.JobSerializer(many=True), **errors(BAD_REQUEST, NOT_FOUND)})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(summary="Start a generation job", description="For the lineage's open generation, chunked into "
                   "Celery tasks on the `generation` queue. 409 when the lineage has no passages to ask about.",
                   parameters=[SLUG], request=s.JobCreateSerializer,
                   responses={201: s.JobSerializer, **errors(BAD_REQUEST, NOT_FOUND, CONFLICT)})
    def post(self, request, slug: str):
        lineage = get_lineage(slug)
        data = s.JobCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            job = job_create(lineage=lineage, created_by=request.user, **data.validated_data)
        except JobError as exc:
            raise Conflict(str(exc)) from None
        return Response(s.JobSerializer(_jobs().get(pk=job.pk)).data, status=status.HTTP_201_CREATED)


class JobDetail(APIView):
    permission_classes = [IsCurator]

    @extend_schema(summary="A job's progress", responses={200: s.JobSerializer, **errors(NOT_FOUND)})
    def get(self, request, pk: int):
        return Response(s.JobSerializer(get_object(_jobs(), "job", pk=pk)).data)


class JobCancel(APIView):
    permission_classes = [IsCurator]

    @extend_schema(summary="Cancel a job", description="It stops after the item in progress; samples already "
                   "stored stay. 409 when the job had already ended.", request=None,
                   responses={200: s.JobSerializer, **errors(NOT_FOUND, CONFLICT)})
    def post(self, request, pk: int):
        job = get_object(_jobs(), "job", pk=pk)
        if not job_cancel(job=job):
            raise Conflict(f"job {job.pk} had already ended ({job.status})")
        return Response(s.JobSerializer(_jobs().get(pk=job.pk)).data)
