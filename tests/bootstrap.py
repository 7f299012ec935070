"""Loaded before Django: give the test run its own data dir and safe defaults.

Values already in the environment win, so `make test` can point the whole run
at PostgreSQL and Redis.
"""

import os
import tempfile

_data_dir = tempfile.mkdtemp(prefix="quarry-test-")
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production")
os.environ.setdefault("DATA_DIR", _data_dir)
os.environ.setdefault("DOCUMENT_ROOTS", tempfile.gettempdir())
os.environ.setdefault("QUEUE_SYNC", "true")
os.environ.setdefault("PROGRESS_INTERVAL_SECONDS", "0")
os.environ.setdefault("QUARRY_TEST_DB_SUFFIX", str(os.getpid()))
os.environ.setdefault("QUEUE_NAME", f"quarry-test-{os.getpid()}")
# Never read a developer's .env into the tests.
os.environ["QUARRY_ENV_FILE"] = os.path.join(_data_dir, "no.env")
