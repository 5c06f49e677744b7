"""Shared fixtures, and the rule for tests that need the real PostgreSQL and Redis.

With REQUIRE_SERVICES=1 (CI) the session refuses to start unless DATABASE_URL is a
PostgreSQL URL that answers and REDIS_URL answers PING. Without it, tests marked
`@pytest.mark.services` (optionally naming "postgres" or "redis") are skipped, with the
reason shown, when the service they need is not configured or does not answer.
"""

from __future__ import annotations

import functools
import os

import psycopg
import pytest
import redis

SERVICES = ("postgres", "redis")


def _services_required() -> bool:
    return os.environ.get("REQUIRE_SERVICES", "").strip() == "1"


@functools.cache
def _service_problem(service: str) -> str | None:
    """Return why `service` cannot be used, or None if it is configured and answers."""
    if service == "postgres":
        url = os.environ.get("DATABASE_URL", "")
        if not url.startswith(("postgres://", "postgresql://")):
            return "DATABASE_URL is not a postgres:// URL"
        try:
            # Django creates the test database from the "postgres" maintenance database.
            psycopg.connect(url, dbname="postgres", connect_timeout=3).close()
        except psycopg.Error as exc:
            return f"PostgreSQL at DATABASE_URL does not answer ({exc})"
        return None
    if service == "redis":
        url = os.environ.get("REDIS_URL", "")
        if not url:
            return "REDIS_URL is not set"
        try:
            redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
        except redis.RedisError as exc:
            return f"Redis at REDIS_URL does not answer ({exc})"
        return None
    raise ValueError(f"Unknown service {service!r}; expected one of {SERVICES}")


def pytest_sessionstart(session: pytest.Session) -> None:
    if not _services_required():
        return
    problems = [p for s in SERVICES if (p := _service_problem(s))]
    if problems:
        pytest.exit("REQUIRE_SERVICES=1 but: " + "; ".join(problems), returncode=1)


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("services")
    if marker is None:
        return
    for service in marker.args or SERVICES:
        problem = _service_problem(service)
        if problem:
            # Only reachable without REQUIRE_SERVICES: with it, the session stopped at start.
            pytest.skip(f"needs {service}: {problem} (REQUIRE_SERVICES=1 makes this a failure)")
