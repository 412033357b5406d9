"""The store: SQLAlchemy 2 Core over SQLite (WAL) by default and PostgreSQL in production.

Writers take a ``Connection`` so the caller owns the transaction; readers take a ``Connection``
or an ``Engine``. Timestamps are integer epoch milliseconds (UTC).
"""
