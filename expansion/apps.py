from django.apps import AppConfig


class ExpansionConfig(AppConfig):
    name = "expansion"
    default_auto_field = "django.db.models.BigAutoField"
