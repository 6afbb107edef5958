"""generation's API shapes: jobs, and the generator settings shown and changed through the lineage's endpoint.

The strict JSON field types are curation's (generation may import curation).
"""
from __future__ import annotations

from rest_framework import serializers

from curation.api.serializers import (
    MAX_SEED,
    BooleanField,
    CharField,
    ChoiceField,
    FloatField,
    IntegerField,
    RegexField,
    URLField,
)
from generation.backends import REGISTRY
from generation.models import GenerationJob, LoopMode
from generation.services import MAX_JOB_SIZE

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$|^$"

# The generator settings, flat on the lineage as before they moved out of curation.Lineage.
GENERATOR_SETTINGS = ("backend", "backend_model", "backend_base_url", "backend_api_key_env", "critique",
                      "student_answers", "temperature", "synthetic_context_fraction", "style_examples", "loop_mode",
                      "webhook_url", "webhook_secret_env")


def generator_read_fields() -> dict:
    """Read-only fields for the lineage serializer, each read from `lineage.generator`."""
    def read(field_class, name, **kwargs):
        return field_class(source=f"generator.{name}", read_only=True, **kwargs)

    return {
        "backend": read(serializers.CharField, "backend"),
        "backend_model": read(serializers.CharField, "backend_model"),
        "backend_base_url": read(serializers.CharField, "backend_base_url"),
        "backend_api_key_env": read(serializers.CharField, "backend_api_key_env"),
        "critique": read(serializers.BooleanField, "critique"),
        "student_answers": read(serializers.IntegerField, "student_answers"),
        "temperature": read(serializers.FloatField, "temperature"),
        "synthetic_context_fraction": read(serializers.FloatField, "synthetic_context_fraction"),
        "style_examples": read(serializers.IntegerField, "style_examples"),
        "loop_mode": read(serializers.ChoiceField, "loop_mode", choices=LoopMode.choices),
        "webhook_url": read(serializers.CharField, "webhook_url"),
        "webhook_secret_env": read(serializers.CharField, "webhook_secret_env"),
    }


def generator_write_fields() -> dict:
    """Optional fields for the lineage PATCH; the service checks the same bounds again."""
    return {
        "backend": ChoiceField(choices=["", *sorted(REGISTRY)], required=False,
                               help_text="A generator backend; empty uses the server's default."),
        "backend_model": CharField(required=False, allow_blank=True, max_length=200),
        "backend_base_url": URLField(required=False, allow_blank=True, max_length=200),
        "backend_api_key_env": RegexField(ENV_NAME, required=False, allow_blank=True, max_length=100,
                                          help_text="The NAME of the variable, never the key."),
        "critique": BooleanField(required=False),
        "student_answers": IntegerField(required=False, min_value=1, max_value=10),
        "temperature": FloatField(required=False, min_value=0, max_value=2),
        "synthetic_context_fraction": FloatField(required=False, min_value=0, max_value=1),
        "style_examples": IntegerField(required=False, min_value=0, max_value=20),
        "loop_mode": ChoiceField(choices=LoopMode.values, required=False,
                                 help_text="What generation N+1's student is: fixed, train or external."),
        "webhook_url": URLField(required=False, allow_blank=True, max_length=200),
        "webhook_secret_env": RegexField(ENV_NAME, required=False, allow_blank=True, max_length=100,
                                         help_text="The NAME of the variable holding the HMAC secret."),
    }


class JobSerializer(serializers.ModelSerializer):
    lineage = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    generation = serializers.IntegerField(source="generation.number", read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True, allow_null=True, default=None)
    progress_percent = serializers.IntegerField(read_only=True)
    rate_per_minute = serializers.FloatField(read_only=True, allow_null=True)
    eta_seconds = serializers.IntegerField(read_only=True, allow_null=True)

    class Meta:
        model = GenerationJob
        fields = ["id", "lineage", "generation", "status", "requested", "done_count", "failed_count",
                  "progress_percent", "rate_per_minute", "eta_seconds", "chunk_size", "seed", "last_error",
                  "created_by", "created_at", "started_at", "finished_at"]


class JobCreateSerializer(serializers.Serializer):
    requested = IntegerField(min_value=1, max_value=MAX_JOB_SIZE, help_text="Samples the job must end with.")
    seed = IntegerField(required=False, min_value=0, max_value=MAX_SEED,
                        help_text="Base seed; item i uses seed + i. Random when left out.")
