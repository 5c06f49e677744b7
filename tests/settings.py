"""Test settings: config.settings with fast, deterministic overrides.

DATABASE_URL and REDIS_URL are honoured as in production, so CI (.ci/run) runs the suite
against PostgreSQL and Redis while a laptop uses SQLite and the in-process cache.
"""

from __future__ import annotations

import os

# Tests run with DEBUG off, like production; they still need some key to start.
os.environ.setdefault("SECRET_KEY", "tests-only-not-a-secret")

from config.settings import *  # noqa: E402, F403

# Hashing passwords properly is deliberately slow; tests only need it to be correct.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The test client speaks plain http; production redirects it to https (HTTPS_ONLY).
SECURE_SSL_REDIRECT = False
