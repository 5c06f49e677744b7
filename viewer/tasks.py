"""Celery tasks: thin interfaces that take primitive arguments and call one service."""

from __future__ import annotations

from celery import Task, shared_task
from django.conf import settings

from viewer.services import appointments, prefetch, previews, printing


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


# A conversion ends well within these, so hitting one means a hostile or broken file: the
# soft limit raises inside the task (LibreOffice's process group is killed on the way out,
# and the row says it took too long); the hard limit kills the worker process itself. Both
# follow CONVERSION_TIMEOUT_SECONDS; a print's also allow for a batch's time budget.
CONVERSION_SOFT_LIMIT = previews.conversion_time_limit()
PRINT_SOFT_LIMIT = printing.print_time_limit()


@shared_task(
    ignore_result=True,
    soft_time_limit=CONVERSION_SOFT_LIMIT,
    time_limit=CONVERSION_SOFT_LIMIT + previews.HARD_LIMIT_GRACE,
)
def convert_document(conversion_id: int) -> str:
    """Make a preview of a format browsers cannot show, as the user who asked for it."""
    return previews.run_conversion(conversion_id)


@shared_task(
    ignore_result=True,
    soft_time_limit=PRINT_SOFT_LIMIT,
    time_limit=PRINT_SOFT_LIMIT + previews.HARD_LIMIT_GRACE,
)
def build_print(job_id: int) -> str:
    """Build a print PDF (one document, or a batch with its cover sheet) with provenance."""
    return printing.run_print_job(job_id)


@shared_task
def purge_converted_documents() -> int:
    """Celery beat: purge expired previews and prints, and those of ended sessions."""
    return previews.purge_stale() + printing.purge_stale()


@shared_task
def recheck_bookings() -> int:
    """Celery beat: check again the bookings still in flight that nobody is working on."""
    return appointments.bookings_recheck()
