from django.apps import AppConfig


class TriggersConfig(AppConfig):
    name = "triggers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Register this app's Celery tasks in every process, so tasks addressed by name resolve.
        # `field__any=ids` (triggers.lookups) for the engine's batch reads by id.
        from django.db import models

        from triggers import tasks  # noqa: F401
        from triggers.lookups import AnyId

        models.ForeignKey.register_lookup(AnyId)
        models.BigAutoField.register_lookup(AnyId)
