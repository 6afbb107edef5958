"""The REST API (Django REST framework): one module per resource, routed in `curation.api.urls`.

Views here validate input with serializers and call the same services and
selectors the pages call; no rule of the curation loop is written twice.
"""
