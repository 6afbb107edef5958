"""Where other apps plug into curation without curation importing them.

`generation` depends on `curation`, never the reverse (DESIGN.md): curation
declares these points, and generation fills them in its AppConfig.ready.
Each point works (does nothing, shows nothing) when nothing is registered, so
curation runs and is tested on its own.

- Signals: `gate_crossed` / `gate_resumed` (pause and resume what runs on a
  schedule), `build_refusal` (a reason not to build a generation's set now),
  `training_set_published` (a set's exports are written).
- Page panels: pieces of HTML another app adds to a curation page.
- Lineage settings sections: settings another app keeps per lineage, read and
  changed through the lineage's API and `lineage_settings_update`.
- Dead-claim releasers: what a starting worker frees and queues again when a
  dead process on its host held it (ouroboros/celery.py, curation/services/claims.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from django.dispatch import Signal
from django.template.loader import render_to_string
from django.utils.safestring import SafeString

# Sent inside the gate's transaction, with `lineage`, `generation` and `reason`.
# A receiver pauses what it runs on a schedule for the lineage and returns the
# ids it paused (they are stored on the GatePause, for the resume).
gate_crossed = Signal()
# Sent inside the resume's transaction with `pause` (a GatePause); a receiver
# resumes what it paused for that gate and returns how many.
gate_resumed = Signal()
# Sent inside the build's transaction, the open generation locked, with
# `generation`; a receiver returns a reason the set cannot be built now
# ("generation 3 still has 1 running job(s)...") or None.
build_refusal = Signal()
# Sent after commit once every export of a set is written, with `training_set`.
training_set_published = Signal()


def first_refusal(*, generation) -> str | None:
    """The first reason a receiver of `build_refusal` gives, or None."""
    for _receiver, reason in build_refusal.send(sender=type(generation), generation=generation):
        if reason:
            return str(reason)
    return None


@dataclass(frozen=True)
class Panel:
    """A piece of a curation page: a template and the function that builds its context."""

    page: str  # "lineage" (the lineage page) or "dashboard_live" (the dashboard's live part)
    template: str
    context: Callable[..., dict]  # context(request=..., **page_kwargs) -> dict
    order: int = 100


_PANELS: list[Panel] = []


def panel_register(panel: Panel) -> None:
    """Add a panel; registering the same one twice (a reloaded app) adds it once."""
    if panel not in _PANELS:
        _PANELS.append(panel)
        _PANELS.sort(key=lambda p: p.order)


def panels_render(*, page: str, request, **kwargs) -> list[SafeString]:
    """Each registered panel of the page rendered to HTML (templates escape what they show)."""
    return [render_to_string(p.template, p.context(request=request, **kwargs), request=request)
            for p in _PANELS if p.page == page]


@dataclass(frozen=True)
class SettingsSection:
    """Settings another app keeps per lineage (e.g. generation's backend and loop mode).

    `names` are the setting names it owns, as the lineage PATCH sends them.
    `read_fields()` and `write_fields()` give DRF fields for the lineage's read
    and write serializers (read ones take their value through `related`, the
    lineage's reverse one-to-one name). `update(lineage=, settings=)` runs
    inside the lineage's update transaction, the lineage row locked; it
    validates and writes, raising curation.services.lineages.SettingsError
    naming the field, which rolls back everything.
    """

    name: str
    names: tuple[str, ...]
    related: str
    read_fields: Callable[[], dict]
    write_fields: Callable[[], dict]
    update: Callable[..., None]


_SECTIONS: dict[str, SettingsSection] = {}


def settings_section_register(section: SettingsSection) -> None:
    _SECTIONS[section.name] = section


def settings_sections() -> list[SettingsSection]:
    return list(_SECTIONS.values())


# Dead-claim releasers: dotted paths of functions that free the claims dead processes on this
# host hold and queue that work again, returning its ids. Curation's own are listed here; other
# apps add theirs (generation: jobs and training runs). Imported only when a worker starts.
_DEAD_CLAIMS_RELEASERS: list[str] = [
    "curation.services.imports.imports_release_dead",
    "curation.services.exports.exports_release_dead",
]


def dead_claims_releaser_register(path: str) -> None:
    """Add a releaser by its dotted path; registering one twice (a reloaded app) adds it once."""
    if path not in _DEAD_CLAIMS_RELEASERS:
        _DEAD_CLAIMS_RELEASERS.append(path)


def dead_claims_releasers() -> list[Callable[[], list[int]]]:
    """Every registered releaser, imported."""
    from django.utils.module_loading import import_string

    return [import_string(path) for path in _DEAD_CLAIMS_RELEASERS]
