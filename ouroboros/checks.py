"""System checks that hold the security rules settings alone cannot express."""
from __future__ import annotations

from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.core.checks import Error, Tags, register


def _code_and_served_folders() -> dict[str, Path]:
    """Folders whose files are code, templates or served as-is: no upload may land in them."""
    folders = {f"app {config.label!r}": Path(config.path) for config in apps.get_app_configs()
               if not config.name.startswith("django.")}
    folders["the project package"] = Path(settings.BASE_DIR) / "ouroboros"
    folders["STATIC_ROOT"] = Path(settings.STATIC_ROOT) if settings.STATIC_ROOT else None
    for number, folder in enumerate(settings.STATICFILES_DIRS):
        folders[f"STATICFILES_DIRS[{number}]"] = Path(folder if isinstance(folder, (str, Path)) else folder[1])
    for engine in settings.TEMPLATES:
        for number, folder in enumerate(engine.get("DIRS", [])):
            folders[f"TEMPLATES DIRS[{number}]"] = Path(folder)
    return {name: folder.resolve() for name, folder in folders.items() if folder is not None}


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


@register(Tags.security)
def check_upload_folders(app_configs=None, **kwargs):
    """Uploads and exports are written where nothing is imported, rendered or served as a static file."""
    written = {"MEDIA_ROOT": settings.MEDIA_ROOT, "EXPORT_ROOT": settings.EXPORT_ROOT,
               "FILE_UPLOAD_TEMP_DIR": settings.FILE_UPLOAD_TEMP_DIR}
    errors = []
    for setting, folder in written.items():
        if not folder:
            continue
        folder = Path(folder).resolve()
        for name, protected in _code_and_served_folders().items():
            if _overlaps(folder, protected):
                errors.append(Error(
                    f"{setting} ({folder}) overlaps {name} ({protected}): uploaded or exported files could be "
                    f"imported, rendered or served from there",
                    hint=f"Point {setting} at a folder of its own (e.g. OUROBOROS_MEDIA_ROOT=/var/lib/ouroboros).",
                    id="ouroboros.E001",
                ))
    if settings.FILE_UPLOAD_PERMISSIONS is not None and settings.FILE_UPLOAD_PERMISSIONS & 0o111:
        errors.append(Error(
            f"FILE_UPLOAD_PERMISSIONS {settings.FILE_UPLOAD_PERMISSIONS:#o} makes uploaded files executable",
            hint="Drop the execute bits, e.g. 0o640.", id="ouroboros.E002",
        ))
    return errors
