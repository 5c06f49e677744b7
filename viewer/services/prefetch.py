"""Prefetch: large documents fetched by Celery before the clinician clicks, kept encrypted.

When a document list is shown, `prefetch_requested` makes one `PrefetchedDocument` row
per large retrievable document (the unique constraint makes it one per document however
many requests ask) and enqueues `viewer.tasks.prefetch_document` for each new row.
`run_prefetch` (the task's body) fetches the Binary as the user who listed it, encrypts
it into the "prefetch" storage as it streams, and records progress. A download of a
ready document is served from the blob, decrypting as it streams. Rows and blobs go when
they expire (PREFETCH_TTL_MINUTES), when the user signs out, and when the session ends.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from gpconnect import (
    DocumentSummary,
    GPConnectError,
    Interactions,
    ProviderEndpoint,
    ProviderUnavailable,
)
from viewer import audit, encrypted_blobs, roles
from viewer.context import PatientContext
from viewer.models import PrefetchedDocument, PrefetchState
from viewer.services import (
    UserLike,
    _client,
    _is_letter,
    base_content_type,
    cache_ttl,
    document_filename,
    document_key,
    max_document_bytes,
    prepended,
    session_alive,
    sniffed_content_type,
)

logger = logging.getLogger(__name__)

# Progress is written to the database at most this often while a document streams in.
PROGRESS_INTERVAL_SECONDS = 0.5
PENDING_STATES = (PrefetchState.QUEUED, PrefetchState.FETCHING)


class PrefetchRetry(Exception):
    """The practice was unavailable; the task should try again after a pause."""

    def __init__(self, error: GPConnectError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True)
class PrefetchStatus:
    """What a document row says about its prefetch."""

    key: str
    state: str  # queued, fetching, ready, failed
    percent: int | None

    @property
    def pending(self) -> bool:
        return self.state in PENDING_STATES


def _threshold_bytes() -> int:
    return int(float(settings.PREFETCH_MIN_MB) * 1024 * 1024)


def _candidates(documents: Iterable[DocumentSummary]) -> list[DocumentSummary]:
    """Large retrievable documents under the size limit, most recent first, capped."""
    low, high = _threshold_bytes(), max_document_bytes()
    large = [
        d for d in documents if d.url is not None and d.size is not None and low <= d.size <= high
    ]

    def recency(document: DocumentSummary) -> str:
        when = document.created or document.indexed
        return when.isoformat() if when else ""

    large.sort(key=recency, reverse=True)
    return large[: int(settings.PREFETCH_MAX_PER_PATIENT)]


def prefetch_requested(
    *,
    user: UserLike,
    context: PatientContext,
    documents: Sequence[DocumentSummary],
    session_key: str,
) -> None:
    """Queue a prefetch for each large document in the list that has none yet.

    `documents` is what this user may see of the patient's list (a letters-only role
    passes letters only). Expired rows are replaced; failed ones are not retried until
    they expire, so a practice that cannot send a document is not asked again and again.
    """
    if not settings.PREFETCH_ENABLED or not session_key or not isinstance(user, User):
        return
    wanted = {document_key(context.id, d.id): d for d in _candidates(documents)}
    if not wanted:
        return
    now = timezone.now()
    rows = PrefetchedDocument.objects.filter(
        user=user, context_id=context.id, document_key__in=list(wanted)
    )
    existing = {row.document_key: row for row in rows}
    expired = [row for row in existing.values() if row.expires_at <= now]
    if expired:
        purge(PrefetchedDocument.objects.filter(pk__in=[row.pk for row in expired]))
    for key, document in wanted.items():
        if key in existing and existing[key].expires_at > now:
            continue
        try:
            with transaction.atomic():
                row = PrefetchedDocument.objects.create(
                    user=user,
                    session_key=session_key,
                    context_id=context.id,
                    document_key=key,
                    document_id=document.id[:500],
                    nhs_number=context.nhs_number,
                    practice_ods=context.practice_ods,
                    service_root=context.service_root,
                    asid=context.asid,
                    url=document.url or "",
                    content_type=base_content_type(document.content_type),
                    filename=document_filename(document),
                    is_letter=_is_letter(document),
                    expected_size=document.size,
                    expires_at=now + cache_ttl(),
                )
        except IntegrityError:
            continue  # another request made it a moment ago: one prefetch per document
        _enqueue(row.pk)


def _enqueue(prefetch_id: int) -> None:
    from viewer import tasks  # tasks import services: import here, not at the top

    transaction.on_commit(lambda: tasks.prefetch_document.delay(prefetch_id))


def statuses(*, user: UserLike, context_id: str, keys: Iterable[str]) -> dict[str, PrefetchStatus]:
    """Return the prefetch status of each of these documents that has one."""
    if not isinstance(user, User):
        return {}
    rows = PrefetchedDocument.objects.filter(
        user=user, context_id=context_id, document_key__in=list(keys), expires_at__gt=timezone.now()
    ).only("document_key", "state", "bytes_fetched", "expected_size")
    return {
        row.document_key: PrefetchStatus(row.document_key, row.state, row.progress_percent)
        for row in rows
    }


# The task's body ------------------------------------------------------------------------


def _associated_data(row: PrefetchedDocument) -> bytes:
    # Binds the blob to its row: a blob renamed or swapped in the storage does not decrypt.
    return f"viewer-prefetch:{row.pk}:{row.user_id}:{row.context_id}:{row.document_key}".encode()


def _note(row: PrefetchedDocument, outcome: str, detail: str, trace_id: str = "") -> None:
    audit.record(
        user=row.user,
        action="prefetch",
        outcome=outcome,
        nhs_number=row.nhs_number,
        context_id=row.context_id,
        document_id=row.document_id,
        trace_id=trace_id,
        detail=detail,
    )


def _fail(row: PrefetchedDocument, detail: str, trace_id: str = "") -> str:
    # One transaction: whoever sees the row fail also sees why in the audit trail.
    with transaction.atomic():
        PrefetchedDocument.objects.filter(pk=row.pk).update(
            state=PrefetchState.FAILED,
            failure=detail[:300],
            trace_id=trace_id[:64],
            updated_at=timezone.now(),
        )
        _note(row, "failure", detail, trace_id)
    return "failed"


def run_prefetch(prefetch_id: int, *, final_attempt: bool) -> str:
    """Fetch one queued document into the encrypted store; return what happened.

    Raises `PrefetchRetry` when the practice is unavailable and another attempt is
    allowed (the row goes back to "queued"); every other outcome is final and audited.
    """
    claimed = PrefetchedDocument.objects.filter(
        pk=prefetch_id, state=PrefetchState.QUEUED, expires_at__gt=timezone.now()
    ).update(
        # update() skips auto_now: the stale-fetch sweep measures from this moment.
        state=PrefetchState.FETCHING,
        attempts=F("attempts") + 1,
        bytes_fetched=0,
        updated_at=timezone.now(),
    )
    if not claimed:
        return "skipped"  # purged, expired, or another worker has it
    row = PrefetchedDocument.objects.select_related("user").get(pk=prefetch_id)
    user = row.user
    if not roles.can(user, "view"):
        return _fail(row, "prefetch: the user's role no longer allows viewing documents")

    endpoint = ProviderEndpoint(
        service_root=row.service_root,
        asid=row.asid,
        ods_code=row.practice_ods,
        capability=Interactions.DOCUMENTS_BINARY.capability,
    )
    last_update = time.monotonic()

    def progress(fetched: int) -> None:
        nonlocal last_update
        if fetched > max_document_bytes():
            raise _TooLarge(fetched)
        if time.monotonic() - last_update >= PROGRESS_INTERVAL_SECONDS:
            last_update = time.monotonic()
            PrefetchedDocument.objects.filter(pk=row.pk).update(
                bytes_fetched=fetched, updated_at=timezone.now()
            )

    trace_id = ""
    content_type = row.content_type
    try:
        with _client(user, endpoint).open_binary(row.url) as download:
            trace_id = download.trace_id
            chunks = iter(download)
            first = next(chunks, b"")
            content_type = sniffed_content_type(row.content_type, first)
            blob_name, size = encrypted_blobs.write(
                f"prefetch/{secrets.token_hex(16)}.bin",
                prepended(first, chunks),
                associated_data=_associated_data(row),
                progress=progress,
            )
    except ProviderUnavailable as error:
        if final_attempt:
            return _fail(
                row,
                f"prefetch: gave up after {row.attempts} attempts: {error.message}",
                error.trace_id or trace_id,
            )
        PrefetchedDocument.objects.filter(pk=row.pk, state=PrefetchState.FETCHING).update(
            state=PrefetchState.QUEUED, bytes_fetched=0, trace_id=(error.trace_id or "")[:64]
        )
        raise PrefetchRetry(error) from error
    except GPConnectError as error:
        return _fail(row, f"prefetch: {audit.described(error)}", error.trace_id or trace_id)
    except _TooLarge as error:
        return _fail(row, f"prefetch: over the size limit after {error.fetched} bytes", trace_id)
    except Exception:
        # Anything else (a storage or key problem) must not leave the row "fetching".
        logger.exception("Prefetch %s failed unexpectedly; trace ID %s", row.pk, trace_id)
        return _fail(row, "prefetch: an unexpected error (see the worker's log)", trace_id)

    with transaction.atomic():
        finished = PrefetchedDocument.objects.filter(
            pk=row.pk, state=PrefetchState.FETCHING
        ).update(
            state=PrefetchState.READY,
            blob_name=blob_name,
            bytes_fetched=size,
            content_type=content_type,
            trace_id=trace_id[:64],
            expires_at=timezone.now() + cache_ttl(),
        )
        if finished:
            _note(row, "success", f"prefetch: {size} bytes stored encrypted", trace_id)
    if not finished:
        # Purged while it was fetching (sign-out, expiry): the blob must not outlive the row.
        encrypted_blobs.delete(blob_name)
        return "purged"
    return "ready"


class _TooLarge(Exception):
    def __init__(self, fetched: int) -> None:
        super().__init__(fetched)
        self.fetched = fetched


# Serving --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadyDocument:
    """A prefetched document, open for reading."""

    row: PrefetchedDocument
    chunks: encrypted_blobs.Plaintext


def open_ready(
    *, user: UserLike, context: PatientContext, key: str, session_key: str
) -> ReadyDocument | None:
    """Return the decrypting stream of a ready prefetch of this document, else None.

    Only this user's row from this session, unexpired. A blob that is missing or does not
    decrypt is logged and purged, and the caller streams live instead.
    """
    if not isinstance(user, User) or not session_key:
        return None
    # At most one row (a unique constraint), so no ordering to ask for, as first() would.
    rows = PrefetchedDocument.objects.filter(
        user=user,
        context_id=context.id,
        document_key=key,
        session_key=session_key,
        state=PrefetchState.READY,
        expires_at__gt=timezone.now(),
    )[:1]
    row = next(iter(rows), None)
    if row is None:
        return None
    try:
        chunks = encrypted_blobs.read(row.blob_name, associated_data=_associated_data(row))
    except encrypted_blobs.BlobUnreadable:
        logger.warning("Prefetched document %s is unreadable; streaming it live", row.pk)
        purge(PrefetchedDocument.objects.filter(pk=row.pk))
        return None
    return ReadyDocument(row, chunks)


# Purging --------------------------------------------------------------------------------


def purge(rows: QuerySet[PrefetchedDocument]) -> int:
    """Delete the rows and their blobs; return how many rows went."""
    doomed = list(rows.values_list("pk", "blob_name"))
    if not doomed:
        return 0
    PrefetchedDocument.objects.filter(pk__in=[pk for pk, _ in doomed]).delete()
    for _, blob_name in doomed:
        encrypted_blobs.delete(blob_name)
    return len(doomed)


def purge_session(session_key: str | None) -> int:
    """Purge everything prefetched in this session (sign-out)."""
    if not session_key:
        return 0
    return purge(PrefetchedDocument.objects.filter(session_key=session_key))


def purge_stale(now: datetime | None = None) -> int:
    """Purge expired prefetches and those whose session has ended; beat runs this."""
    now = now or timezone.now()
    # A worker that died mid-fetch leaves its row "fetching": after the task's hard time
    # limit it is failed, so the row stops saying it is on its way.
    cutoff = now - timedelta(seconds=int(settings.CELERY_TASK_TIME_LIMIT) + 60)
    stalled = PrefetchedDocument.objects.filter(
        state=PrefetchState.FETCHING, updated_at__lt=cutoff
    ).select_related("user")
    for row in stalled:
        detail = "prefetch: the worker stopped part way"
        with transaction.atomic():
            # Conditional: a fetch that finished a moment ago keeps its result.
            if PrefetchedDocument.objects.filter(
                pk=row.pk, state=PrefetchState.FETCHING, updated_at__lt=cutoff
            ).update(state=PrefetchState.FAILED, failure=detail, updated_at=now):
                _note(row, "failure", detail, row.trace_id)
    gone = purge(PrefetchedDocument.objects.filter(expires_at__lte=now))
    sessions = set(PrefetchedDocument.objects.values_list("session_key", flat=True).distinct())
    ended = [key for key in sessions if not session_alive(key)]
    if ended:
        gone += purge(PrefetchedDocument.objects.filter(session_key__in=ended))
    return gone
