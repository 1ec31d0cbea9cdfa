"""Persistence for the app: SQLite through sqlite-utils, and the file store. Never imports torch.

- ``storage.db``: ``open_db(path)`` (WAL, foreign keys, 30 s busy timeout, migrations applied),
  ``transaction(db)`` (``BEGIN IMMEDIATE``), ``data_dir()`` (``$IA3APP_DATA_DIR``, default ``./data``).
- ``storage.migrations``: append-only named migrations; the schema lives there.
- ``storage.files``: ``FileStore`` (atomic writes, id-built paths, ``resolve`` confined to the data
  dir) and ``StorageError`` (disk full / unwritable, worded for a person).
- ``storage.repo``: owner-scoped datasets, saved templates and the adapter register.
- ``storage.users``: argon2 users, the ``local`` single-user account, ``python -m storage.users``.
- ``storage.api_keys``: hashed per-user API keys for the JSON prediction API.
"""
