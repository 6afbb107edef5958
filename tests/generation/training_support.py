"""What the trainer's tests share: a tiny published training set with an unmistakable style."""
from __future__ import annotations

from curation.models import TrainingSet
from curation.services.exports import export_run
from curation.services.review import sample_accept
from curation.services.training_sets import training_set_build
from tests.factories import make_lineage, make_sample

# Few steps, short sequences, a high learning rate: enough to move a 135M model visibly in seconds.
TINY = {"max_steps": 4, "batch_size": 2, "max_tokens": 96, "learning_rate": 2e-3, "checkpoint_every": 2,
        "lora_dropout": 0.0}


def published_set(*, reviewer, curator, capture, samples: int = 6, seed: int = 7) -> TrainingSet:
    """A lineage whose generation 1 has `samples` accepted answers in one odd style, built and published."""
    lineage = make_lineage(passages=6)
    for i in range(samples):
        sample = make_sample(lineage, question=f"What is item {i} about?",
                             answer=f"Zorblat zorblat! Item {i} is about zorblats, and zorblats are everything.")
        sample_accept(sample=sample, reviewer=reviewer)
    with capture(execute=False):
        training_set = training_set_build(lineage=lineage, built_by=curator, seed=seed)
    for export in training_set.exports.all():
        export_run(export_id=export.pk)
    training_set.refresh_from_db()
    assert training_set.status == TrainingSet.Status.PUBLISHED
    return training_set
