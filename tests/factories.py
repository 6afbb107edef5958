"""Small factories for test data: plain functions with sensible defaults."""
from __future__ import annotations

import itertools
import json

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from curation.models import Flag, Lineage, Sample
from curation.services.lineages import lineage_create, passages_add
from curation.management.commands.seed_demo import DEMO_FILE
from ouroboros.roles import CURATOR, REVIEWER

_seq = itertools.count(1)


def demo_passages(count: int | None = None) -> list[dict]:
    passages = json.loads(DEMO_FILE.read_text(encoding="utf-8"))["passages"]
    return passages[:count] if count is not None else passages


def make_user(username: str, role: str | None = None, **extra):
    user = get_user_model().objects.create_user(username=username, password="pw-" + username, **extra)
    if role:
        group, _ = Group.objects.get_or_create(name=role)
        user.groups.add(group)
    return user


def make_lineage(*, passages: int = 6, backend: str = "fake", **fields) -> Lineage:
    """A lineage with demo passages; `fields` may name Lineage's fields and its generator settings' alike."""
    from generation.models import GeneratorSettings

    n = next(_seq)
    lineage = lineage_create(name=f"Lineage {n}", slug=f"lineage-{n}")
    passages_add(lineage=lineage, passages=demo_passages(passages))
    generator_names = {f.name for f in GeneratorSettings._meta.concrete_fields} - {"id", "lineage"}
    generator = {name: fields.pop(name) for name in list(fields) if name in generator_names}
    GeneratorSettings.objects.update_or_create(lineage=lineage, defaults={"backend": backend, **generator})
    Lineage.objects.filter(pk=lineage.pk).update(**fields)
    lineage.refresh_from_db()
    return lineage


def make_sample(lineage: Lineage, *, question: str = "", answer: str = "", flagged: bool = True, passage=None,
                **fields) -> Sample:
    n = next(_seq)
    from django.utils import timezone

    return Sample.objects.create(
        lineage=lineage,
        generation=lineage.generations.get(status="open"),
        passage=passage or lineage.passages.first(),
        question=question or f"What does passage {n} say?",
        answer=answer or f"It says something specific, item {n}.",
        flagged_at=timezone.now() if flagged else None,
        **fields,
    )


def make_flag(sample: Sample, kind: str = Flag.Kind.NEAR_DUPLICATE, score: float = 0.95, **evidence) -> Flag:
    return Flag.objects.create(sample=sample, kind=kind, score=score, evidence=evidence, detector_version="test")


__all__ = ["CURATOR", "REVIEWER", "demo_passages", "make_flag", "make_lineage", "make_sample", "make_user"]
