from django.apps import AppConfig


class OffersConfig(AppConfig):
    name = "offers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Register this app's Celery tasks in every process, so tasks addressed by name resolve.
        from offers import tasks  # noqa: F401
