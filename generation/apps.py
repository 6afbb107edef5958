from django.apps import AppConfig


class GenerationConfig(AppConfig):
    name = "generation"
    verbose_name = "Generation"

    def ready(self):
        from . import hooks, signals  # noqa: F401  (receivers register on import)

        hooks.register()  # generation's panels and settings on curation's pages and API
