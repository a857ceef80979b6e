"""In-process scheduler for the embedded mode (no Redis): runs the beat schedule's tasks in this process."""

import time
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the periodic tasks of CELERY_BEAT_SCHEDULE in-process (embedded mode; use celery beat with Redis)."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--once", action="store_true", help="Run every periodic task once and exit.")

    def handle(self, *args: object, **options: object) -> None:
        entries: dict[str, tuple[str, float]] = {
            name: (str(entry["task"]), entry["schedule"].total_seconds())
            for name, entry in settings.CELERY_BEAT_SCHEDULE.items()
            if isinstance(entry["schedule"], timedelta)
        }
        next_run = dict.fromkeys(entries, 0.0)
        while True:
            now = time.monotonic()
            for name, (task_name, every) in entries.items():
                if now >= next_run[name]:
                    current_app.tasks[task_name].apply()
                    next_run[name] = now + every
            if options["once"]:
                return
            time.sleep(1)
