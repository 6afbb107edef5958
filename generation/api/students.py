"""Registering an externally trained student over the API (external trainers, issue 13.4)."""
from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from curation.api.errors import field_error
from curation.api.permissions import IsCurator
from curation.api.responses import BAD_REQUEST, NOT_FOUND, errors
from curation.api.serializers import CharField, RegexField, URLField
from curation.models import Generation
from generation.models import ModelRecord
from generation.services.loop import StudentError, generation_student_register_remote

GENERATION = OpenApiParameter("pk", int, OpenApiParameter.PATH, description="The generation's id.")


class StudentRegisterSerializer(serializers.Serializer):
    base_url = URLField(max_length=200, help_text="The endpoint's OpenAI-compatible base URL, e.g. "
                        "http://127.0.0.1:8001/v1; its host must be on OUROBOROS_BACKEND_ALLOWED_HOSTS.")
    model = CharField(max_length=200, help_text="The model name the endpoint serves.")
    api_key_env = RegexField(r"^[A-Za-z_][A-Za-z0-9_]*$|^$", required=False, allow_blank=True, default="",
                             max_length=100, help_text="The NAME of the workers' variable holding the endpoint's "
                             "key (it must start with OUROBOROS_BACKEND_KEY_ENV_PREFIX), never the key.")
    name = CharField(required=False, allow_blank=True, default="", max_length=200,
                     help_text="A name for the record; the model name when empty.")


class RemoteModelSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelRecord
        fields = ["id", "kind", "name", "base_url", "remote_model", "api_key_env", "status", "failure_reason",
                  "metrics", "created_at"]


class GenerationStudent(APIView):
    permission_classes = [IsCurator]

    @extend_schema(
        summary="Register an externally trained model as a generation's student",
        description="The endpoint (any OpenAI-compatible server: vLLM, TGI, llama.cpp's) is checked against the "
                    "backend allowlist and asked for one short chat completion before it is recorded as ready "
                    "and made the student of this open generation. 400 naming the field for an unknown or closed "
                    "generation (`generation`), a host the allowlist refuses or an endpoint that cannot be "
                    "reached or fails (`base_url`), a key variable outside the allowed names (`api_key_env`).",
        parameters=[GENERATION], request=StudentRegisterSerializer,
        # 404: only for a path that is not a generation id at all (the API's catch-all); an id that names
        # no generation is a 400 naming `generation`, as the trainer's input was wrong.
        responses={201: RemoteModelSerializer, **errors(BAD_REQUEST, NOT_FOUND)},
    )
    def post(self, request, pk: int):
        data = StudentRegisterSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        generation = Generation.objects.select_related("lineage").filter(pk=pk).first()
        if generation is None:
            raise field_error("generation", f"there is no generation with id {pk}")
        values = data.validated_data
        try:
            record = generation_student_register_remote(
                generation=generation, base_url=values["base_url"], remote_model=values["model"],
                api_key_env=values["api_key_env"], name=values["name"], created_by=request.user)
        except StudentError as exc:
            raise field_error(exc.field, exc.message) from None
        return Response({**RemoteModelSerializer(record).data, "generation": generation.pk},
                        status=status.HTTP_201_CREATED)
