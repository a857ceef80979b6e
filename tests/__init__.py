"""Uplift test suite."""

import pytest

# Fixture modules loaded with pytest_plugins by some test files: rewrite their asserts too.
pytest.register_assert_rewrite("tests.stripe_fixtures")
