"""Round trips through the real database, cache and Celery broker, and a real worker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.db import connection

from viewer.tasks import ping

BASE_DIR = Path(__file__).resolve().parent.parent


@contextmanager
def celery_worker(env: dict[str, str], queue: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run `celery -A config worker` (as `make worker` does) on one queue until the block ends."""
    worker = subprocess.Popen(
        [
            *(sys.executable, "-m", "celery", "-A", "config", "worker"),
            *("--pool", "solo", "--queues", queue, "--hostname", f"{queue}@%h"),
            *(
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
                "--loglevel",
                "WARNING",
            ),
        ],
        cwd=BASE_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    try:
        yield worker
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


@pytest.mark.services("postgres")
@pytest.mark.django_db
def test_the_database_in_use_is_postgresql() -> None:
    assert connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute("SELECT 41 + 1")
        assert cursor.fetchone() == (42,)


@pytest.mark.services("redis")
def test_the_cache_round_trips_a_value_through_redis() -> None:
    cache = caches["default"]
    assert isinstance(cache, RedisCache)
    key = f"tests:{uuid.uuid4().hex}"
    cache.set(key, {"answer": 42}, timeout=30)
    try:
        assert cache.get(key) == {"answer": 42}
    finally:
        cache.delete(key)
    assert cache.get(key) is None


@pytest.mark.services("redis")
def test_a_celery_task_round_trips_through_redis_and_a_real_worker() -> None:
    # A queue of its own, so a developer's running worker cannot take the message.
    queue = f"tests-{uuid.uuid4().hex[:12]}"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    with celery_worker(env, queue):
        assert ping.apply_async(queue=queue).get(timeout=60) == "pong"


def test_a_celery_task_round_trips_through_the_embedded_broker_without_redis(
    tmp_path: Path,
) -> None:
    # What a laptop with no REDIS_URL does: the file broker and file results under VAR_DIR.
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL"}}
    env |= {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SECRET_KEY": "tests-only-not-a-secret",
        "VAR_DIR": str(tmp_path),
    }
    client = (
        "import django; django.setup(); "
        "from django.conf import settings; assert settings.CELERY_BROKER_URL.startswith('filesystem://'); "
        "from viewer.tasks import ping; "
        "print(ping.apply_async(queue='celery').get(timeout=60))"
    )
    with celery_worker(env, "celery"):
        result = subprocess.run(
            [sys.executable, "-c", client],
            cwd=BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pong"
    assert list((tmp_path / "celery" / "results").iterdir()), "the result was not stored on disk"
