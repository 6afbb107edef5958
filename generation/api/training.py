"""Training runs over the API: start one on a published set, watch its progress, cancel it."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from curation.api.common import MAX_ID, get_object
from curation.api.errors import Conflict
from curation.api.permissions import IsCurator
from curation.api.responses import BAD_REQUEST, CONFLICT, NOT_FOUND, errors
from curation.models import TrainingSet
from generation.models import ModelRecord, TrainingRun
from generation.services.training import TrainingError, training_run_cancel, training_run_create


class ModelRecordSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelRecord
        fields = ["id", "kind", "name", "parent", "training_set", "sha256", "status", "failure_reason", "params",
                  "metrics", "created_at"]


class TrainingRunSerializer(serializers.ModelSerializer):
    lineage = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    base_model = ModelRecordSerializer(read_only=True)
    output_model = ModelRecordSerializer(read_only=True, allow_null=True)
    progress_percent = serializers.IntegerField(read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True, allow_null=True, default=None)

    class Meta:
        model = TrainingRun
        fields = ["id", "lineage", "training_set", "status", "step", "total_steps", "progress_percent", "loss",
                  "tokens_per_s", "eta_seconds", "seed", "params", "base_model", "output_model", "error",
                  "claimed_by", "created_by", "created_at", "started_at", "finished_at"]


class TrainingRunCreateSerializer(serializers.Serializer):
    training_set = serializers.IntegerField(min_value=1, max_value=MAX_ID, help_text="A published training set.")
    params = serializers.DictField(required=False, default=dict, help_text=(
        "LoRA and optimiser settings: lora_r, lora_alpha, lora_dropout, learning_rate, batch_size, max_tokens, "
        "epochs, max_steps, checkpoint_every, seed, target_modules. Defaults: r=16 on q/k/v/o, 1 epoch."))


def _runs():
    return TrainingRun.objects.select_related("lineage", "base_model", "output_model", "created_by")


class TrainingRunList(APIView):
    permission_classes = [IsCurator]

    @extend_schema(summary="Train the student on a published training set",
                   description="Queues a run on the `training` queue; it fine-tunes the set's student (or the "
                   "embedded base) with LoRA and registers the result once llama.cpp has loaded it and "
                   "generated once. 409 names why a set cannot be trained on (not published, too small...).",
                   request=TrainingRunCreateSerializer,
                   responses={201: TrainingRunSerializer, **errors(BAD_REQUEST, NOT_FOUND, CONFLICT)})
    def post(self, request):
        data = TrainingRunCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        training_set = get_object(TrainingSet.objects.select_related("lineage", "generation"), "training set",
                                  pk=data.validated_data["training_set"])
        try:
            run = training_run_create(training_set=training_set, created_by=request.user,
                                      params=data.validated_data["params"])
        except TrainingError as exc:
            raise Conflict(str(exc)) from None
        return Response(TrainingRunSerializer(_runs().get(pk=run.pk)).data, status=status.HTTP_201_CREATED)


class TrainingRunDetail(APIView):
    permission_classes = [IsCurator]

    @extend_schema(summary="A training run's progress", description="Step of total, the last loss, training "
                   "tokens per second, the ETA, and the model it made once done.",
                   responses={200: TrainingRunSerializer, **errors(NOT_FOUND)})
    def get(self, request, pk: int):
        return Response(TrainingRunSerializer(get_object(_runs(), "training run", pk=pk)).data)


class TrainingRunCancel(APIView):
    permission_classes = [IsCurator]

    @extend_schema(summary="Cancel a training run", description="It stops at its next step; no model is "
                   "registered. 409 when the run had already ended.", request=None,
                   responses={200: TrainingRunSerializer, **errors(NOT_FOUND, CONFLICT)})
    def post(self, request, pk: int):
        run = get_object(_runs(), "training run", pk=pk)
        if not training_run_cancel(run=run):
            raise Conflict(f"training run {run.pk} had already ended ({run.status})")
        return Response(TrainingRunSerializer(_runs().get(pk=run.pk)).data)
