from django.apps import AppConfig


class CurationConfig(AppConfig):
    name = "curation"
    verbose_name = "Curation"

    def ready(self):
        # The project's own system checks (upload folders) register on import.
        from ouroboros import checks  # noqa: F401
