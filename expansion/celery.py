"""The Celery application: Redis broker when REDIS_URL is set, in-process otherwise."""

import os
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "expansion.settings")

app = Celery("uplift")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Celery's Django fixup closes every database connection before and after each task unless this is
# set: each task then paid a new connection and a new PostgreSQL backend whose catalog caches start
# cold (~10% of the evaluation worker's time in connect alone, in bench/engine_latency.py). With it
# set the fixup leaves connections alone (it would close them only every 2 x this many tasks), and
# the signals below treat each task as Django treats a request: CONN_MAX_AGE and the health check
# decide whether the connection is kept.
app.conf.CELERY_DB_REUSE_MAX = 10**9


def _recycle_database_connections(sender: Any = None, **kwargs: Any) -> None:
    if getattr(getattr(sender, "request", None), "is_eager", False):
        return  # an eager task runs inside its caller's connection and transaction
    from django.db import close_old_connections

    close_old_connections()


task_prerun.connect(_recycle_database_connections, weak=False)
task_postrun.connect(_recycle_database_connections, weak=False)
