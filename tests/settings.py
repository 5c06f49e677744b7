"""Test settings: config.settings with fast, deterministic overrides.

DATABASE_URL and REDIS_URL are honoured as in production, so CI (.ci/run) runs the suite
against PostgreSQL and Redis while a laptop uses SQLite and the in-process cache.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Tests run with DEBUG off, like production; they still need some key to start.
os.environ.setdefault("SECRET_KEY", "tests-only-not-a-secret")

from config.settings import *  # noqa: E402, F403

# Hashing passwords properly is deliberately slow; tests only need it to be correct.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The test client speaks plain http; production redirects it to https (HTTPS_ONLY).
SECURE_SSL_REDIRECT = False

# Prefetch is switched on by the tests about it (tests/viewer/test_prefetch.py), so other
# tests that list documents enqueue nothing. Its keyset lives outside the checkout.
PREFETCH_ENABLED = False
PREFETCH_KEYSET_PATH = (
    Path(tempfile.gettempdir()) / f"gpconnect-tests-prefetch-keyset-{os.getuid()}.json"
)

# Tests serve static files from the finders: there is no collectstatic output to serve.
STATIC_ROOT = None  # type: ignore[assignment]
WHITENOISE_USE_FINDERS = True
