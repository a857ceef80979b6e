import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "expansion.settings")
application = get_wsgi_application()


def _freeze_startup_objects() -> None:
    """Keep the collector from walking what lives as long as the process.

    Django, the apps and every view (imported here through the URL conf rather than at the first
    request) are ~115,000 tracked objects. An ingest batch makes thousands of containers that
    survive long enough to reach the oldest generation, so a full collection ran every ~30
    batches and walked all of them: ~70 ms each, ~2 ms per batch on average. Frozen after one
    collection (startup garbage is freed first), they are no longer walked.
    """
    get_resolver().url_patterns  # noqa: B018 -- the import of every view is the point
    gc.collect()
    gc.freeze()
    # A 500-event batch allocates ~20,000 containers that live until the response: at the default
    # threshold (700) the young generations were collected ~11 times per batch, walking the parsed
    # body each time (~0.5 ms of ~8 ms). Every 10,000 allocations: ~once per batch, ~0.2 ms.
    gc.set_threshold(10_000, 10, 10)


_freeze_startup_objects()
