"""Fixtures for tests against real servers: ``mongo_server`` and ``mongo_url`` (SecantusDB).

``mongo_url`` names a fresh database per test; see ``tests/persistence_servers.py``. Under
``CI=true`` a test here that skips for a missing service fails (see ``tests/services.py``).
"""

from tests.persistence_servers import mongo_server, mongo_url  # noqa: F401 - fixtures
from tests.services import pytest_runtest_makereport  # noqa: F401 - CI: no silent skips
