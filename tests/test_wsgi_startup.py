"""The WSGI module loads every view, freezes the startup objects out of the collector's walks and collects the young less often."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import gc, sys
import expansion.wsgi
print(gc.get_freeze_count(), "triggers.api" in sys.modules, len(gc.get_objects(generation=2)), gc.get_threshold()[0])
"""


def test_startup_objects_are_frozen_with_the_views_loaded():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "expansion.settings"}
    output = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    frozen, views_loaded, oldest_generation = int(output[0]), output[1] == "True", int(output[2])
    young_threshold = int(output[3])
    assert views_loaded
    # Almost everything is frozen; what a full collection would still walk is a small remainder.
    assert frozen > 50_000 and oldest_generation < frozen // 20
    # A batch's parsed body is not walked a dozen times per request.
    assert young_threshold == 10_000
