"""Samples (cursor pages, indexed filters, detail with flags and evidence) and reviewers' decisions.

Reviewers may read samples and decide them; the queue's rules (one decision
wins, leases, reasons, undo) are the services', the same the review page calls.
"""
from __future__ import annotations

import django_filters
from django import forms
from django.db.models import Exists, OuterRef
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import status
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from curation import reports, selectors
from curation.api import serializers as s
from curation.api.common import IdCursorPagination, get_lineage, get_object
from curation.api.errors import Conflict, field_error
from curation.api.lineages import SLUG
from curation.api.permissions import IsReviewer
from curation.api.responses import BAD_REQUEST, CONFLICT, NOT_FOUND, errors
from curation.models import Flag, Generation, Sample
from curation.services.review import (
    AlreadyDecided,
    LeasedElsewhere,
    QueueFilter,
    ReviewError,
    review_undo,
    sample_decide,
    sample_lease_next,
    sample_release,
)

# Orderings the list offers: each is served by an index on (lineage, ...), see Sample.Meta.indexes.
ORDERINGS = {"id": ("id",), "-id": ("-id",), "-risk": ("-risk", "id")}


@extend_schema_field(OpenApiTypes.INT)
class IntegerFilter(django_filters.NumberFilter):
    field_class = forms.IntegerField


class SampleFilter(django_filters.FilterSet):
    generation = IntegerFilter(method="by_generation", min_value=0, max_value=1_000_000,
                               help_text="The generation's number.")
    status = django_filters.ChoiceFilter(
        choices=Sample.Status.choices, method="by_status",
        help_text="A sample you may still give its blind second review has no status for you, so it matches "
                  "no status (it is listed without a filter, in its blind form).")
    flag = django_filters.ChoiceFilter(choices=[("none", "No flag"), *Flag.Kind.choices], method="by_flag",
                                       help_text="Samples carrying a flag of this kind; `none`: no flag at all.")
    min_risk = django_filters.NumberFilter(field_name="risk", lookup_expr="gte", min_value=0, max_value=1)
    max_risk = django_filters.NumberFilter(field_name="risk", lookup_expr="lte", min_value=0, max_value=1)
    ordering = django_filters.ChoiceFilter(choices=[(key, key) for key in ORDERINGS], method="by_nothing",
                                           help_text="`id` (default, oldest first), `-id`, or `-risk` (riskiest "
                                                     "first). Applied by the cursor pagination.")

    class Meta:
        model = Sample
        fields = ["generation", "status", "flag", "min_risk", "max_risk", "ordering"]

    def by_generation(self, queryset, name, value):
        # Resolved to an id first, so that the filter stays on the sample table's own indexes.
        generation_id = Generation.objects.filter(lineage_id=self.lineage_id, number=int(value)).values_list(
            "id", flat=True).first()
        return queryset.filter(generation_id=generation_id) if generation_id else queryset.none()

    def by_status(self, queryset, name, value):
        # Blind rows are left out: their presence under a status would give the first decision away.
        return queryset.filter(status=value, blind=False)

    def by_flag(self, queryset, name, value):
        flags = Flag.objects.filter(sample=OuterRef("pk"))
        if value == "none":
            return queryset.filter(~Exists(flags))
        return queryset.filter(Exists(flags.filter(kind=value)))  # flag_one_per_kind's (sample, kind) index

    def by_nothing(self, queryset, name, value):
        return queryset

    def is_valid(self) -> bool:
        valid = super().is_valid()
        # A parameter sent empty (`?status=`) is a mistake, not "no filter".
        for name in self.filters:
            if name in self.data and self.data[name] == "":
                self.form.add_error(name, "an empty value; leave the parameter out instead")
                valid = False
        return valid

    @property
    def lineage_id(self) -> int:
        return self.request.parser_context["kwargs"]["lineage_id"]


class SampleList(ListAPIView):
    permission_classes = [IsReviewer]
    serializer_class = s.SampleSerializer
    pagination_class = IdCursorPagination
    filterset_class = SampleFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular reading the view for the schema
            return Sample.objects.none()
        lineage = get_lineage(self.kwargs["slug"])
        self.kwargs["lineage_id"] = lineage.pk
        samples = (Sample.objects.filter(lineage=lineage).select_related("lineage", "generation")
                   .prefetch_related("flags")
                   .defer("embedding", "minhash", "minhash_bands", "dialogue", "alt_answers", "neighbours"))
        return selectors.samples_with_blindness(samples, user=self.request.user)

    def cursor_ordering(self, request) -> tuple[str, ...]:
        return ORDERINGS.get(request.query_params.get("ordering", "id"), ORDERINGS["id"])

    @extend_schema(summary="A lineage's samples, filtered, in cursor pages", parameters=[SLUG],
                   description="A sample you may still give its blind second review comes in its blind form "
                               "(`second_review: true`): the answer as generated, no status or decision time.",
                   responses={200: s.SAMPLE_ROW_FOR_REVIEWER, **errors(BAD_REQUEST, NOT_FOUND)})
    def get(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(
            [(s.BlindSampleRowSerializer if sample.blind else s.SampleSerializer)(sample).data for sample in page])


def _sample(pk: int) -> Sample:
    get_object(Sample.objects.only("id"), "sample", pk=pk)
    return reports.sample_trace(pk=pk)


def _for_reviewer(sample: Sample, user) -> dict:
    """The sample as this user may see it: blind while they may still give its second review."""
    if s.sample_is_blind(sample, user):
        return s.BlindSampleSerializer(sample).data
    return s.SampleDetailSerializer(sample).data


class SampleDetail(APIView):
    permission_classes = [IsReviewer]

    @extend_schema(summary="A sample with its flags, their evidence, and its reviews",
                   description="For a reviewer who may still give a double-review sample its blind second "
                               "review, the blind form: the answer as generated, no status, reviews or edit.",
                   responses={200: s.SAMPLE_FOR_REVIEWER, **errors(NOT_FOUND)})
    def get(self, request, pk: int):
        return Response(_for_reviewer(_sample(pk), request.user))


class SampleDecide(APIView):
    permission_classes = [IsReviewer]

    @extend_schema(summary="Decide a sample: accept, reject with a reason, or edit and accept",
                   description="The same rule as the review queue: of two decisions at once exactly one wins, the "
                               "other gets 409; so does a sample leased to another reviewer or already decided.",
                   request=s.DECISION_BODY,
                   responses={201: s.ReviewSerializer, **errors(BAD_REQUEST, NOT_FOUND, CONFLICT)})
    def post(self, request, pk: int):
        sample = get_object(Sample.objects.select_related("lineage"), "sample", pk=pk)
        data = s.DecisionSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        decision = data.validated_data["decision"]
        try:
            review = sample_decide(sample=sample, reviewer=request.user, **data.validated_data)
        except (AlreadyDecided, LeasedElsewhere) as exc:
            raise Conflict(str(exc)) from None
        except ReviewError as exc:
            if "closed generation" in str(exc) or "not waiting" in str(exc) or "already decided" in str(exc):
                raise Conflict(str(exc)) from None
            field = {"reject": "reason", "edit": "edited_answer"}.get(decision, "decision")
            raise field_error(field, str(exc)) from None
        return Response(s.ReviewSerializer(review).data, status=status.HTTP_201_CREATED)


class SampleRelease(APIView):
    permission_classes = [IsReviewer]

    @extend_schema(summary="Give back a sample leased to you (skip)", request=None,
                   responses={200: s.SampleSerializer, **errors(NOT_FOUND, CONFLICT)})
    def post(self, request, pk: int):
        sample = get_object(Sample.objects.select_related("lineage", "generation"), "sample", pk=pk)
        if not sample_release(sample=sample, reviewer=request.user):
            raise Conflict(f"sample {sample.pk} is not leased to you")
        return Response(s.SampleSerializer(sample).data)


class ReviewUndo(APIView):
    permission_classes = [IsReviewer]

    @extend_schema(summary="Undo your latest decision in this lineage",
                   description="The sample goes back to pending and is leased to you; called again, it undoes the "
                               "decision before. 409 when nothing of yours is left to undo.",
                   parameters=[SLUG], request=None,
                   responses={201: s.ReviewSerializer, **errors(NOT_FOUND, CONFLICT)})
    def post(self, request, slug: str):
        undo = review_undo(reviewer=request.user, lineage=get_lineage(slug))
        if undo is None:
            raise Conflict("nothing to undo: you have no standing decision in this lineage's open generation")
        return Response(s.ReviewSerializer(undo).data, status=status.HTTP_201_CREATED)


class QueueNext(APIView):
    permission_classes = [IsReviewer]

    @extend_schema(summary="Lease your next sample from the review queue",
                   description="As the review page does: your held card first, else the next free one in the "
                               "chosen order, leased to you for the lineage's lease time. 204 when the queue is empty. "
                               "A second review comes in the blind form (`second_review: true`).",
                   parameters=[SLUG], request=s.QueueNextSerializer,
                   responses={200: s.SAMPLE_FOR_REVIEWER,
                              204: OpenApiResponse(description="Nothing left to review with these filters."),
                              **errors(BAD_REQUEST, NOT_FOUND)})
    def post(self, request, slug: str):
        lineage = get_lineage(slug)
        data = s.QueueNextSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        filters = QueueFilter(**data.validated_data)  # an empty risk range is an empty queue: 204
        sample = sample_lease_next(reviewer=request.user, lineage=lineage, filters=filters)
        if sample is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(_for_reviewer(_sample(sample.pk), request.user))
