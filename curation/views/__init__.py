"""Curation views, one module per area: `review` (the queue), `lineages` (lineages
and training sets), `dashboard` (metrics, gates, generation and sample pages)."""
