"""Hand-made data for the metrics and gates tests: embeddings whose cosines are known."""
from __future__ import annotations

from curation.models import SourcePassage


def unit_vector(index: int, dim: int = 384) -> list[float]:
    """The index-th basis vector: any two different ones have cosine 0, the same one 1."""
    vector = [0.0] * dim
    vector[index] = 1.0
    return vector


def embed_passages_as_basis(lineage) -> list[SourcePassage]:
    """Give the lineage's passages the embeddings e0, e1, … so that nothing is left for the model to embed."""
    passages = list(lineage.passages.order_by("id"))
    for i, passage in enumerate(passages):
        passage.embedding = unit_vector(i)
    SourcePassage.objects.bulk_update(passages, ["embedding"])
    return passages
