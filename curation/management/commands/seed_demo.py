"""Load the demo lineage with its real passages and create the demo users.

Safe to run on every start: existing rows are kept, passwords are not reset.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from curation.models import Lineage
from curation.services.lineages import lineage_create, passages_add
from ouroboros.roles import CURATOR, REVIEWER

DEMO_FILE = Path(__file__).resolve().parents[2] / "demo" / "passages.json"
DEMO_USERS = (
    # (username, role, password env var, default password)
    ("curator", CURATOR, "OUROBOROS_DEMO_CURATOR_PASSWORD", "curator-demo"),
    ("reviewer", REVIEWER, "OUROBOROS_DEMO_REVIEWER_PASSWORD", "reviewer-demo"),
)


class Command(BaseCommand):
    help = "Create the demo lineage (real biology passages) and a demo curator and reviewer."

    def handle(self, *args, **options):
        data = json.loads(DEMO_FILE.read_text(encoding="utf-8"))
        with transaction.atomic():
            for role in (CURATOR, REVIEWER):
                Group.objects.get_or_create(name=role)
            spec = data["lineage"]
            lineage = Lineage.objects.filter(slug=spec["slug"]).first() or lineage_create(
                name=spec["name"], slug=spec["slug"], description=spec.get("description", "")
            )
            added = passages_add(lineage=lineage, passages=data["passages"])
            users = [self._user(*spec) for spec in DEMO_USERS]
        self.stdout.write(f"Demo lineage {lineage.name!r}: {lineage.passages.count()} passages ({added} new).")
        for username, password, usable in users:
            note = repr(password) if usable else "(changed since it was created)"
            self.stdout.write(f"  login {username!r} password {note}")

    def _user(self, username: str, role: str, env: str, default: str):
        User = get_user_model()
        user, created = User.objects.get_or_create(username=username)
        password = os.environ.get(env, default)
        if created:
            user.set_password(password)
            user.is_staff = role == CURATOR  # curators may use the admin
            user.save()
        usable = user.check_password(password)
        user.groups.add(Group.objects.get(name=role))
        if role == CURATOR:
            _grant_admin_permissions(user)
        return username, password, usable


def _grant_admin_permissions(user) -> None:
    """Curators manage lineages, passages and jobs in the admin."""
    from django.contrib.auth.models import Permission

    group = Group.objects.get(name=CURATOR)
    perms = Permission.objects.filter(content_type__app_label__in=["curation", "generation"])
    group.permissions.add(*perms)
