from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from accounts import (
            schema,  # noqa: F401 -- registers the key schemes with drf-spectacular
            sqlite_datetimes,
        )

        sqlite_datetimes.register()
