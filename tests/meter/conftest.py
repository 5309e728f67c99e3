"""The store's database fixtures (``tests/dbfixtures.py``): a clean, migrated database per module on each backend."""

from dbfixtures import database_url, empty_database_url, engine, factory, seed  # noqa: F401
