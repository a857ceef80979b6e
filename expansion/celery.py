"""The Celery application: Redis broker when REDIS_URL is set, in-process otherwise."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "expansion.settings")

app = Celery("uplift")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
