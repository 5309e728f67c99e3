"""Store fixtures (defined in ``tests/dbfixtures.py``, shared with the meter tests): every test runs on a SQLite
file and on the local PostgreSQL server, each module on a fresh, migrated database."""

from dbfixtures import Seed, database_url, empty_database_url, engine, factory, seed  # noqa: F401
