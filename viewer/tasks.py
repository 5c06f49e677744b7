"""Celery tasks: thin interfaces that take primitive arguments and call one service."""

from __future__ import annotations

from celery import Task, shared_task
from django.conf import settings

from viewer.services import prefetch


@shared_task
def ping() -> str:
    """Return "pong": proves a worker consumes from the broker and results come back."""
    return "pong"


@shared_task(bind=True, ignore_result=True, max_retries=None)
def prefetch_document(self: Task[..., str], prefetch_id: int) -> str:
    """Fetch one document into the encrypted cache, as the user who listed it.

    When the practice is unavailable it tries again with exponential backoff (2, 4, 8 s…
    up to a minute), PREFETCH_MAX_RETRIES times; each try builds a fresh JWT.
    """
    attempt = self.request.retries
    final = attempt >= int(settings.PREFETCH_MAX_RETRIES)
    try:
        return prefetch.run_prefetch(prefetch_id, final_attempt=final)
    except prefetch.PrefetchRetry as retry:
        raise self.retry(exc=retry, countdown=min(60, 2 ** (attempt + 1))) from retry


@shared_task
def purge_prefetched_documents() -> int:
    """Celery beat: purge expired prefetches and those of sessions that have ended."""
    return prefetch.purge_stale()
