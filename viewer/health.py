"""Checks behind /healthz: can we reach the database and the cache right now?"""

from __future__ import annotations

import logging
import uuid

from django.core.cache import cache
from django.db import connection

logger = logging.getLogger(__name__)


def database_ok() -> bool:
    """Return True if the database answers a trivial query."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return bool(cursor.fetchone() == (1,))
    except Exception:
        logger.exception("Health check: the database did not answer")
        return False


def cache_ok() -> bool:
    """Return True if a value written to the cache can be read back."""
    key = f"healthz:{uuid.uuid4().hex}"
    try:
        cache.set(key, "ok", timeout=10)
        ok = bool(cache.get(key) == "ok")
        cache.delete(key)
        return ok
    except Exception:
        logger.exception("Health check: the cache did not answer")
        return False
