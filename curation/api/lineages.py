"""Lineages, their settings, generations and real corpus, the training-set plan and the overview."""
from __future__ import annotations

from django.db.models import Prefetch
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from curation import reports, selectors
from curation.api import serializers as s
from curation.api.common import IdCursorPagination, get_lineage, get_object
from curation.api.errors import Conflict, field_error
from curation.api.permissions import IsCurator
from curation.api.responses import BAD_REQUEST, CONFLICT, NOT_FOUND, errors
from curation.extensions import settings_sections
from curation.models import GatePause, Generation, GenerationMetrics, Lineage, SourcePassage
from curation.services.lineages import CorpusError, SettingsError, lineage_create, lineage_settings_update, passages_add
from curation.services.training_sets import TrainingSetError, policy_check, training_set_plan

SLUG = OpenApiParameter("slug", str, OpenApiParameter.PATH, description="The lineage's slug.")


def _lineages():
    related = [section.related for section in settings_sections()]
    return Lineage.objects.select_related("policy", *related).prefetch_related(
        Prefetch("generations", queryset=Generation.objects.only("id", "lineage_id", "number", "status")))


class LineageList(APIView):
    permission_classes = [IsCurator]

    @extend_schema(summary="List lineages", responses={200: s.LineageSerializer(many=True), **errors()})
    def get(self, request):
        return Response(s.LineageSerializer(_lineages().order_by("name"), many=True).data)

    @extend_schema(summary="Create a lineage", description="It starts with generation 0 (its real corpus) closed, "
                   "generation 1 open, and the default policy.", request=s.LineageCreateSerializer,
                   responses={201: s.LineageSerializer, **errors(BAD_REQUEST)})
    def post(self, request):
        data = s.LineageCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        lineage = lineage_create(**data.validated_data)
        return Response(s.LineageSerializer(_lineages().get(pk=lineage.pk)).data, status=status.HTTP_201_CREATED)


class LineageDetail(APIView):
    permission_classes = [IsCurator]

    @extend_schema(summary="A lineage with its settings and policy", parameters=[SLUG],
                   responses={200: s.LineageSerializer, **errors(NOT_FOUND)})
    def get(self, request, slug: str):
        return Response(s.LineageSerializer(get_object(_lineages(), "lineage", slug=slug)).data)

    @extend_schema(summary="Change a lineage's settings and policy",
                   description="Send only what changes: generator settings, reject reasons, thresholds, the policy "
                               "and its gates. All or nothing.",
                   parameters=[SLUG], request=s.LineageUpdateSerializer,
                   responses={200: s.LineageSerializer, **errors(BAD_REQUEST, NOT_FOUND)})
    def patch(self, request, slug: str):
        lineage = get_lineage(slug)
        data = s.LineageUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        settings = dict(data.validated_data)
        policy = settings.pop("policy", {})
        if "name" in settings and Lineage.objects.filter(name=settings["name"]).exclude(pk=lineage.pk).exists():
            raise field_error("name", "a lineage with this name exists")
        try:
            lineage_settings_update(lineage=lineage, settings=settings, policy=policy)
        except SettingsError as exc:
            raise field_error(exc.field, str(exc).split(": ", 1)[-1]) from None
        return Response(s.LineageSerializer(_lineages().get(pk=lineage.pk)).data)


class GenerationList(APIView):
    permission_classes = [IsCurator]

    @extend_schema(summary="A lineage's generations", parameters=[SLUG],
                   responses={200: s.GenerationSerializer(many=True), **errors(NOT_FOUND)})
    def get(self, request, slug: str):
        lineage = get_lineage(slug)
        generations = Generation.objects.filter(lineage=lineage).select_related(
            "lineage", "training_set", "metrics").order_by("number")
        return Response(s.GenerationSerializer(generations, many=True, context={"request": request}).data)


class GenerationDetail(APIView):
    permission_classes = [IsCurator]

    @extend_schema(summary="One generation", responses={200: s.GenerationSerializer, **errors(NOT_FOUND)})
    def get(self, request, pk: int):
        generation = get_object(Generation.objects.select_related("lineage", "training_set", "metrics"),
                                "generation", pk=pk)
        return Response(s.GenerationSerializer(generation, context={"request": request}).data)


class PassageList(ListAPIView):
    """GET: the lineage's real passages in id order (cursor pages). POST: add a batch."""

    permission_classes = [IsCurator]
    serializer_class = s.PassageSerializer
    pagination_class = IdCursorPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular reading the view for the schema
            return SourcePassage.objects.none()
        return get_lineage(self.kwargs["slug"]).passages.defer("embedding", "content_hash")

    @extend_schema(summary="A lineage's source passages", parameters=[SLUG], responses={
        200: s.PassageSerializer(many=True), **errors(BAD_REQUEST, NOT_FOUND)})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(summary="Add source passages", description="Up to 1000 passages as JSON, all or nothing; a text "
                   "already in the corpus is not added twice. Errors name the item: `passages[3].text`. "
                   "Large files go through the imports endpoint.", parameters=[SLUG],
                   request=s.PassageBatchSerializer,
                   responses={201: s.PassageBatchResultSerializer, **errors(BAD_REQUEST, NOT_FOUND)})
    def post(self, request, slug: str):
        lineage = get_lineage(slug)
        data = s.PassageBatchSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        passages = data.validated_data["passages"]
        try:
            added = passages_add(lineage=lineage, passages=passages)
        except CorpusError as exc:
            # The service numbers passages from 1; the API names items by index from 0.
            number = int(str(exc).split()[1]) if str(exc).startswith("passage ") else None
            raise field_error(f"passages[{number - 1}].text" if number else "passages", str(exc)) from None
        return Response({"added": added, "received": len(passages), "passages": lineage.passages.count()},
                        status=status.HTTP_201_CREATED)


class TrainingSetPlan(APIView):
    permission_classes = [IsCurator]

    @extend_schema(summary="What building the open generation's training set now would hold",
                   description="A read: the composition under the policy and every rule it would break.",
                   parameters=[SLUG], responses={200: s.CompositionSerializer, **errors(NOT_FOUND, CONFLICT)})
    def get(self, request, slug: str):
        lineage = get_lineage(slug)
        try:
            plan = training_set_plan(lineage=lineage)
        except TrainingSetError as exc:
            raise Conflict(str(exc)) from None
        breaches = [{"rule": b.rule, "message": b.message, "shortfall": b.shortfall} for b in policy_check(plan)]
        return Response({
            "generation": plan.generation, "mode": plan.mode, "min_real_fraction": plan.min_real_fraction,
            "synthetic": plan.synthetic, "real": plan.real, "real_needed": plan.real_needed, "corpus": plan.corpus,
            "real_fraction": plan.real_fraction, "composition": plan.by_source(), "breaches": breaches,
        })


class LineageOverview(APIView):
    permission_classes = [IsCurator]

    @extend_schema(summary="The dashboard's view of a lineage", description="The open generation's counts, and each "
                   "generation's stored collapse verdict (metrics are computed by tasks, never in a request).",
                   parameters=[SLUG], responses={200: s.OverviewSerializer, **errors(NOT_FOUND)})
    def get(self, request, slug: str):
        lineage = get_lineage(slug)
        overview = selectors.lineage_overview(lineage=lineage)
        generations = []
        for generation in lineage.generations.select_related("metrics", "training_set").order_by("number"):
            metrics = reports._metrics(generation)
            training_set = s.GenerationSerializer().get_training_set(generation)
            generations.append({
                "id": generation.pk, "number": generation.number, "status": generation.status,
                "at_risk": metrics.at_risk if metrics else None,
                "risk_reasons": list(metrics.risk_reasons) if metrics else [],
                "training_set": training_set,
            })
        paused = GatePause.objects.filter(lineage=lineage, resumed_at__isnull=True).values_list(
            "generation__number", flat=True)
        return Response({
            "lineage": lineage.slug,
            "open_generation": overview["generation"].number if overview["generation"] else None,
            "counts": overview["counts"], "flagged": overview["flagged"], "passages": overview["passages"],
            "generations": generations, "paused_by_gate": sorted(paused),
        })


class GenerationMetricsDetail(APIView):
    permission_classes = [IsCurator]

    @extend_schema(summary="A generation's collapse metrics", description="Diversity (distinct-n, pairwise "
                   "distance, Vendi), coverage of the real corpus, drift, flag and accept rates, agreement, and the "
                   "gates' verdict. 404 until the metrics task has run.",
                   responses={200: s.GenerationMetricsSerializer, **errors(NOT_FOUND)})
    def get(self, request, pk: int):
        metrics = get_object(GenerationMetrics.objects.select_related("generation__lineage"),
                             "metrics for generation", generation_id=pk)
        return Response(s.GenerationMetricsSerializer(metrics).data)


class GenerationMetricsRecompute(APIView):
    permission_classes = [IsCurator]

    @extend_schema(summary="Recompute a generation's metrics", description="Queues the metrics task, as the "
                   "dashboard's Recompute does; poll the metrics endpoint.", request=None,
                   responses={202: s.GenerationSerializer, **errors(NOT_FOUND)})
    def post(self, request, pk: int):
        from django.db import transaction

        from curation.services.metrics import generation_metrics_compute_later

        generation = get_object(Generation.objects.select_related("lineage"), "generation", pk=pk)
        with transaction.atomic():
            generation_metrics_compute_later(generation_id=generation.pk)
        return Response(s.GenerationSerializer(generation, context={"request": request}).data,
                        status=status.HTTP_202_ACCEPTED)
