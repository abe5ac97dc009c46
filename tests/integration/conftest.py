"""Fixtures for tests against real servers: ``mongo_server`` and ``mongo_url`` (SecantusDB).

``mongo_url`` names a fresh database per test; see ``tests/persistence_servers.py``.
"""

from tests.persistence_servers import mongo_server, mongo_url  # noqa: F401 - fixtures
