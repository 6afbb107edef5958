"""Writes of the curation app, one module per area. Import from the module:
`from curation.services.review import sample_decide`."""
