"""The API's OpenAPI schema as /api/schema/ serves it, built without a request.

The schemathesis tests build it at collection time (one test per operation),
when no user exists to fetch it from the live endpoint, which needs a signed-in one.
"""
from __future__ import annotations

import json


def served_schema() -> dict:
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.renderers import OpenApiJsonRenderer

    return json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))
