from django.apps import AppConfig


class TriggersConfig(AppConfig):
    name = "triggers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Register this app's Celery tasks in every process, so tasks addressed by name resolve.
        from triggers import tasks  # noqa: F401
