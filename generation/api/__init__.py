"""generation's part of the REST API (jobs, models, training runs), mounted at `/api/` ahead of
`curation.api.urls`, whose last route is the JSON 404 for every other path. The views reuse
curation's API plumbing (errors, permissions, pagination): generation may import curation.
"""
