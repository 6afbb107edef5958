"""The API's shapes: read serializers describe what comes back, write serializers what may be sent.

Write serializers carry the same bounds as the services (and say so in the
schema); the services still check everything, so a rule never depends on
which door a request came in by.
"""
from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from curation.models import (
    Flag,
    Generation,
    GenerationMetrics,
    Lineage,
    LineagePolicy,
    Review,
    Sample,
    SourcePassage,
    TrainingSet,
    TrainingSetExport,
)
from curation.services.lineages import MAX_PASSAGE_CHARS
from curation.services.review import MAX_EDIT_CHARS, Order
from curation.extensions import settings_sections

MAX_PASSAGES_PER_REQUEST = 1000
MAX_SEED = 2**31 - 1


# Strict JSON types. DRF's fields coerce ("0.5" to 0.5, 3 to "3", "yes" to True); a
# script that sends the wrong type has a bug, and is told so with a 400 naming the field.
class _Strict:
    json_types: tuple[type, ...] = ()

    def to_internal_value(self, data):
        if isinstance(data, bool) != (bool in self.json_types) or not isinstance(data, self.json_types):
            raise serializers.ValidationError(f"expected {self.json_name}, got {type(data).__name__}")
        return super().to_internal_value(data)


class CharField(_Strict, serializers.CharField):
    json_types, json_name = (str,), "a string"


class SlugField(_Strict, serializers.SlugField):
    json_types, json_name = (str,), "a string"


class URLField(_Strict, serializers.URLField):
    json_types, json_name = (str,), "a string"


class RegexField(_Strict, serializers.RegexField):
    json_types, json_name = (str,), "a string"


class ChoiceField(_Strict, serializers.ChoiceField):
    json_types, json_name = (str,), "a string"


class IntegerField(_Strict, serializers.IntegerField):
    json_types, json_name = (int,), "an integer"


class FloatField(_Strict, serializers.FloatField):
    json_types, json_name = (int, float), "a number"


class BooleanField(_Strict, serializers.BooleanField):
    json_types, json_name = (bool,), "true or false"


# ---------------------------------------------------------------- lineages


class PolicySerializer(serializers.ModelSerializer):
    class Meta:
        model = LineagePolicy
        fields = ["mode", "min_real_fraction", "metrics_seed", "metrics_sample_size", "coverage_radius",
                  "gate_min_samples", "gate_min_diversity_ratio", "gate_max_duplicate_rate", "gate_min_coverage",
                  "gate_max_hallucination_rate", "gate_max_perplexity_ratio", "heldout_fraction", "heldout_min"]


class LineageSerializer(serializers.ModelSerializer):
    policy = serializers.SerializerMethodField()
    open_generation = serializers.SerializerMethodField(help_text="The number of the generation being generated.")

    class Meta:
        model = Lineage
        fields = ["id", "name", "slug", "description", "created_at", "open_generation",
                  "reject_reasons", "lease_seconds", "overlap_fraction", "auto_review", "duplicate_threshold",
                  "hallucination_threshold", "lm_grounding", "policy"]

    def get_fields(self):
        # Settings other apps keep per lineage (generation's backend, sampling, loop mode), flat beside curation's.
        fields = super().get_fields()
        for section in settings_sections():
            fields.update(section.read_fields())
        return fields

    @extend_schema_field(PolicySerializer)
    def get_policy(self, lineage: Lineage) -> dict:
        from curation.services.training_sets import lineage_policy

        return PolicySerializer(lineage_policy(lineage=lineage)).data

    def get_open_generation(self, lineage: Lineage) -> int | None:
        return next((g.number for g in lineage.generations.all() if g.status == Generation.Status.OPEN), None)


class LineageCreateSerializer(serializers.Serializer):
    name = CharField(max_length=200)
    slug = SlugField(max_length=200)
    description = CharField(required=False, allow_blank=True, default="", max_length=10_000)

    def validate_name(self, value):
        if Lineage.objects.filter(name=value).exists():
            raise serializers.ValidationError("a lineage with this name exists")
        return value

    def validate_slug(self, value):
        if Lineage.objects.filter(slug=value).exists():
            raise serializers.ValidationError("a lineage with this slug exists")
        return value


def _fraction(**kwargs):
    return FloatField(required=False, min_value=0, max_value=1, **kwargs)


class PolicyUpdateSerializer(serializers.Serializer):
    mode = ChoiceField(choices=LineagePolicy.Mode.choices, required=False)
    min_real_fraction = FloatField(required=False, min_value=0, max_value=0.99)
    metrics_seed = IntegerField(required=False, min_value=0, max_value=MAX_SEED)
    metrics_sample_size = IntegerField(required=False, min_value=10, max_value=100_000)
    coverage_radius = FloatField(required=False, min_value=0, max_value=2)
    gate_min_samples = IntegerField(required=False, min_value=0, max_value=1_000_000)
    gate_min_diversity_ratio = _fraction(allow_null=True)
    gate_max_duplicate_rate = _fraction(allow_null=True)
    gate_min_coverage = _fraction(allow_null=True)
    gate_max_hallucination_rate = _fraction(allow_null=True)
    gate_max_perplexity_ratio = FloatField(required=False, allow_null=True, min_value=1, max_value=100)
    heldout_fraction = FloatField(required=False, min_value=0, max_value=0.5)
    heldout_min = IntegerField(required=False, min_value=0, max_value=100_000)


class LineageUpdateSerializer(serializers.Serializer):
    """Every field is optional: only what is sent changes (PATCH)."""

    name = CharField(required=False, max_length=200)
    description = CharField(required=False, allow_blank=True, max_length=10_000)
    reject_reasons = serializers.ListField(child=CharField(max_length=60), required=False,
                                           min_length=1, max_length=9)
    lease_seconds = IntegerField(required=False, min_value=10, max_value=86_400)
    overlap_fraction = _fraction()
    auto_review = BooleanField(required=False, help_text="A system reviewer decides by the flags (experiments).")
    duplicate_threshold = _fraction()
    hallucination_threshold = _fraction()
    lm_grounding = BooleanField(required=False, help_text="Score sentences with the language model too (about 1 s "
                                                          "a sample more); off for lineages that need speed.")
    policy = PolicyUpdateSerializer(required=False)

    def get_fields(self):
        fields = super().get_fields()
        for section in settings_sections():
            fields.update(section.write_fields())
        return fields


# ---------------------------------------------------------------- generations and passages


class GenerationSerializer(serializers.ModelSerializer):
    lineage = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    training_set = serializers.SerializerMethodField(help_text="The id of the set built from it, if any.")
    metrics = serializers.SerializerMethodField(help_text="Where its metrics are, once computed.")

    class Meta:
        model = Generation
        fields = ["id", "lineage", "number", "status", "created_at", "closed_at", "training_set", "metrics"]

    def get_training_set(self, generation: Generation) -> int | None:
        try:
            return generation.training_set.pk
        except TrainingSet.DoesNotExist:
            return None

    def get_metrics(self, generation: Generation) -> str | None:
        try:
            generation.metrics
        except GenerationMetrics.DoesNotExist:
            return None
        request = self.context.get("request")
        url = reverse("api-generation-metrics", args=[generation.pk])
        return request.build_absolute_uri(url) if request else url


class PassageSerializer(serializers.ModelSerializer):
    class Meta:
        model = SourcePassage
        fields = ["id", "title", "text", "created_at"]


class PassageInSerializer(serializers.Serializer):
    title = CharField(required=False, allow_blank=True, default="", max_length=300)
    text = CharField(max_length=MAX_PASSAGE_CHARS)


class PassageBatchSerializer(serializers.Serializer):
    passages = PassageInSerializer(many=True, min_length=1, max_length=MAX_PASSAGES_PER_REQUEST)


class PassageBatchResultSerializer(serializers.Serializer):
    added = serializers.IntegerField(help_text="Passages that were new; a text already present is not added twice.")
    received = serializers.IntegerField()
    passages = serializers.IntegerField(help_text="The lineage's passages now.")


# ---------------------------------------------------------------- samples, flags, reviews


class FlagSerializer(serializers.ModelSerializer):
    evidence = serializers.JSONField(help_text="What the detector saw: the passage, the duplicate, the sentences and "
                                               "their support, the scores.")

    class Meta:
        model = Flag
        fields = ["kind", "score", "evidence", "detector_version", "created_at"]


class SampleSerializer(serializers.ModelSerializer):
    lineage = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    generation = serializers.IntegerField(source="generation.number", read_only=True)
    flags = serializers.SerializerMethodField(help_text="The kinds of flag the sample carries.")

    class Meta:
        model = Sample
        fields = ["id", "lineage", "generation", "status", "question", "answer", "risk", "novelty",
                  "duplicate_score", "hallucination_score", "flags", "flagged_at", "decided_at", "created_at"]

    def get_flags(self, sample: Sample) -> list[str]:
        return [flag.kind for flag in sample.flags.all()]


class PassageRefSerializer(serializers.ModelSerializer):
    class Meta:
        model = SourcePassage
        fields = ["id", "title", "text"]


class ReviewSerializer(serializers.ModelSerializer):
    reviewer = serializers.CharField(source="reviewer.username", read_only=True)
    undone = serializers.SerializerMethodField()
    undoes = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)

    class Meta:
        model = Review
        fields = ["id", "sample", "reviewer", "decision", "reason", "edited_answer", "overlap", "bulk", "undoes",
                  "undone", "created_at"]

    def get_undone(self, review: Review) -> bool:
        # A sample's reviews come as one list: the undone ones are those another row of it undoes.
        undone_ids = self.context.get("undone_ids")
        if undone_ids is not None:
            return review.pk in undone_ids
        return Review.objects.filter(undoes=review).exists()


def _undone_ids(sample: Sample) -> set[int]:
    return {review.undoes_id for review in sample.reviews.all() if review.undoes_id}


class SampleDetailSerializer(SampleSerializer):
    flags = FlagSerializer(many=True, read_only=True)
    passage = PassageRefSerializer(read_only=True)
    reviews = serializers.SerializerMethodField()
    reject_reasons = serializers.ListField(source="lineage.reject_reasons", child=serializers.CharField(),
                                           read_only=True, help_text="The reasons a rejection may give.")
    leased_to = serializers.CharField(source="leased_to.username", read_only=True, allow_null=True, default=None)

    class Meta(SampleSerializer.Meta):
        fields = [*SampleSerializer.Meta.fields, "alt_answers", "dialogue", "provenance", "original_answer",
                  "passage", "neighbours", "cluster", "double_review", "leased_to", "lease_expires_at",
                  "reject_reasons", "reviews"]

    @extend_schema_field(ReviewSerializer(many=True))
    def get_reviews(self, sample: Sample) -> list[dict]:
        return ReviewSerializer(sample.reviews.all(), many=True, context={"undone_ids": _undone_ids(sample)}).data


def sample_is_blind(sample: Sample, user) -> bool:
    """Whether `user` may still give this sample its blind second review, and so
    must not see the first one: a double-review sample, decided, with no standing
    second review yet, that `user` has not decided. Reads the sample's prefetched reviews."""
    if not sample.double_review or sample.status == Sample.Status.PENDING:
        return False
    undone = _undone_ids(sample)
    standing = [r for r in sample.reviews.all() if r.decision != Review.Decision.UNDO and r.pk not in undone]
    return not any(r.overlap or r.reviewer_id == user.pk for r in standing)


BLIND_HIDDEN = ("status", "decided_at")


class BlindSampleRowSerializer(SampleSerializer):
    """A row of the sample list for a reviewer who may still give it its blind second review: the
    answer as generated, and nothing of the first decision (no status, decision time or edit)."""

    answer = serializers.SerializerMethodField(help_text="The answer as generated (before any reviewer's edit).")
    second_review = serializers.SerializerMethodField(
        help_text="Always true: decide with `overlap: true`; the first decision is hidden until you have.")

    class Meta(SampleSerializer.Meta):
        fields = [*(f for f in SampleSerializer.Meta.fields if f not in BLIND_HIDDEN), "second_review"]

    def get_answer(self, sample: Sample) -> str:
        return sample.original_answer or sample.answer

    def get_second_review(self, sample: Sample) -> bool:
        return True


class BlindSampleSerializer(BlindSampleRowSerializer):
    """A sample for its blind second review: the answer as generated, and nothing
    of the first decision (no status, decision time, reviews, edit or original answer)."""

    flags = FlagSerializer(many=True, read_only=True)
    passage = PassageRefSerializer(read_only=True)
    reject_reasons = serializers.ListField(source="lineage.reject_reasons", child=serializers.CharField(),
                                           read_only=True, help_text="The reasons a rejection may give.")
    leased_to = serializers.CharField(source="leased_to.username", read_only=True, allow_null=True, default=None)

    class Meta(SampleSerializer.Meta):
        fields = [*(f for f in SampleSerializer.Meta.fields if f not in BLIND_HIDDEN), "alt_answers", "dialogue",
                  "provenance", "passage", "neighbours", "cluster", "double_review", "leased_to",
                  "lease_expires_at", "reject_reasons", "second_review"]


# A row of the sample list: the sample, or its blind form for a possible second reviewer.
SAMPLE_ROW_FOR_REVIEWER = PolymorphicProxySerializer(
    component_name="SampleRowForReviewer", resource_type_field_name=None,
    serializers=[SampleSerializer, BlindSampleRowSerializer], many=True,
)


# What sample detail and queue-next answer: the full sample, or its blind form for a second reviewer.
SAMPLE_FOR_REVIEWER = PolymorphicProxySerializer(
    component_name="SampleForReviewer", resource_type_field_name=None,
    serializers=[SampleDetailSerializer, BlindSampleSerializer],
)


class DecisionSerializer(serializers.Serializer):
    decision = ChoiceField(choices=[(Review.Decision.ACCEPT, "accept"), (Review.Decision.REJECT, "reject"),
                                                (Review.Decision.EDIT, "edit and accept")])
    reason = CharField(required=False, allow_blank=True, default="", max_length=500,
                                   help_text="For reject: one of the lineage's reasons ('other: <text>' for other).")
    edited_answer = CharField(required=False, allow_blank=True, default="", max_length=MAX_EDIT_CHARS,
                                          help_text="For edit: the corrected answer.")
    overlap = BooleanField(required=False, default=False,
                                       help_text="A blind second review of a double-review sample.")

    def validate(self, data):
        if data["decision"] == Review.Decision.REJECT and not data["reason"].strip():
            raise serializers.ValidationError({"reason": ["a rejection needs a reason"]})
        if data["decision"] == Review.Decision.EDIT and not data["edited_answer"].strip():
            raise serializers.ValidationError({"edited_answer": ["an edit needs the corrected answer"]})
        return data


class _AcceptBody(serializers.Serializer):
    decision = ChoiceField(choices=[("accept", "accept")])
    overlap = BooleanField(required=False, default=False)


class _RejectBody(_AcceptBody):
    decision = ChoiceField(choices=[("reject", "reject")])
    reason = CharField(max_length=500, help_text="One of the lineage's reject reasons "
                                   "(`reject_reasons` on the sample); `other: <text>` for other.")


class _EditBody(_AcceptBody):
    decision = ChoiceField(choices=[("edit", "edit and accept")])
    edited_answer = CharField(max_length=MAX_EDIT_CHARS, help_text="The corrected answer.")


# The request body's schema, one shape per decision (DecisionSerializer validates all three).
DECISION_BODY = PolymorphicProxySerializer(
    component_name="Decision", resource_type_field_name="decision",
    serializers={"accept": _AcceptBody, "reject": _RejectBody, "edit": _EditBody},
)


class QueueNextSerializer(serializers.Serializer):
    generation = IntegerField(required=False, min_value=0, max_value=1_000_000)
    flag = ChoiceField(choices=["", "none", *Flag.Kind.values], required=False, default="")
    min_risk = FloatField(required=False, min_value=0, max_value=1)
    max_risk = FloatField(required=False, min_value=0, max_value=1)
    order = ChoiceField(choices=[value for value, _ in Order.CHOICES], required=False, default=Order.RISK)


# ---------------------------------------------------------------- training sets and metrics


class ExportSerializer(serializers.ModelSerializer):
    progress_percent = serializers.IntegerField(read_only=True)
    download = serializers.SerializerMethodField()

    bytes = serializers.IntegerField(source="size_bytes", read_only=True)

    class Meta:
        model = TrainingSetExport
        fields = ["format", "status", "rows_written", "rows_total", "progress_percent", "sha256", "bytes",
                  "error", "started_at", "finished_at", "download"]

    def get_download(self, export: TrainingSetExport) -> str | None:
        if export.status != TrainingSetExport.Status.DONE:
            return None
        url = reverse("api-training-set-download", args=[export.training_set_id, export.format])
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request else url


class TrainingSetSerializer(serializers.ModelSerializer):
    lineage = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    generation = serializers.IntegerField(source="generation.number", read_only=True)
    built_by = serializers.CharField(source="built_by.username", read_only=True)
    exports = ExportSerializer(many=True, read_only=True)
    manifest_download = serializers.SerializerMethodField()
    policy = serializers.JSONField(read_only=True)
    manifest = serializers.JSONField(read_only=True)

    # The names the first version of this endpoint used.
    synthetic = serializers.IntegerField(source="sample_count", read_only=True, help_text="Accepted samples.")
    real = serializers.IntegerField(source="real_count", read_only=True, help_text="Real passages.")
    manifest_sha256 = serializers.CharField(source="sha256", read_only=True,
                                            help_text="sha256 of manifest.json; empty until published.")

    class Meta:
        model = TrainingSet
        fields = ["id", "lineage", "generation", "status", "seed", "policy", "synthetic", "real", "manifest_sha256",
                  "built_by", "created_at", "published_at", "manifest", "manifest_download", "exports"]

    def get_manifest_download(self, training_set: TrainingSet) -> str | None:
        if training_set.status != TrainingSet.Status.PUBLISHED:
            return None
        url = reverse("api-training-set-download", args=[training_set.pk, "manifest"])
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request else url


class TrainingSetBuildSerializer(serializers.Serializer):
    seed = IntegerField(required=False, min_value=0, max_value=MAX_SEED,
                                    help_text="Seeds the real-data draw and the record order; random when left out.")


class CompositionSerializer(serializers.Serializer):
    generation = serializers.IntegerField()
    mode = serializers.ChoiceField(choices=LineagePolicy.Mode.choices)
    min_real_fraction = serializers.FloatField()
    synthetic = serializers.IntegerField()
    real = serializers.IntegerField()
    real_needed = serializers.IntegerField()
    corpus = serializers.IntegerField()
    real_fraction = serializers.FloatField()
    composition = serializers.ListField(child=serializers.DictField(), help_text="Records by source: {generation, origin, records}.")
    breaches = serializers.ListField(child=serializers.DictField(), help_text="Each rule the set would break: "
                                     "{rule, message, shortfall}. Empty: it can be built.")


class GenerationMetricsSerializer(serializers.ModelSerializer):
    lineage = serializers.CharField(source="generation.lineage.slug", read_only=True)
    generation = serializers.IntegerField(source="generation.number", read_only=True)
    flag_rates = serializers.JSONField(read_only=True)
    reject_reasons = serializers.JSONField(read_only=True)
    agreement = serializers.JSONField(read_only=True)
    params = serializers.JSONField(read_only=True)
    risk_reasons = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = GenerationMetrics
        fields = ["lineage", "generation", "computed_at", "fingerprint", "generated", "accepted", "rejected",
                  "pending", "accept_rate", "flag_rates", "duplicate_rate", "hallucination_rate", "reject_reasons",
                  "distinct_1", "distinct_2", "pairwise_distance", "vendi", "coverage", "centroid_drift",
                  "selection_bias", "agreement", "kappa", "heldout_perplexity", "params", "at_risk", "risk_reasons"]


class OverviewGenerationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    number = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Generation.Status.choices)
    at_risk = serializers.BooleanField(allow_null=True, help_text="null until its metrics are computed.")
    risk_reasons = serializers.ListField(child=serializers.CharField())
    training_set = serializers.IntegerField(allow_null=True)


class OverviewSerializer(serializers.Serializer):
    lineage = serializers.CharField()
    open_generation = serializers.IntegerField(allow_null=True)
    counts = serializers.DictField(child=serializers.IntegerField(),
                                   help_text="The open generation's samples by status: pending, accepted, rejected.")
    flagged = serializers.IntegerField(help_text="Samples of the open generation that carry a flag.")
    passages = serializers.IntegerField()
    generations = OverviewGenerationSerializer(many=True)
    paused_by_gate = serializers.ListField(child=serializers.IntegerField(),
                                           help_text="Generations whose gate paused the lineage's schedules.")

