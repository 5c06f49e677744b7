"""Prefetch of large documents by a real Celery worker, and downloads from its encrypted cache.

The worker runs in a thread of the test process (celery.contrib.testing), consuming from
the configured broker: Redis in CI (REQUIRE_SERVICES=1), the filesystem transport on a
bare laptop. The database is transactional so the worker sees what the request committed.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from django.contrib.sessions.models import Session
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from config.celery import app as celery_app
from tests.viewer.conftest import RecordingSandbox, make_user
from tests.viewer.test_document_views import PDF, body_of, context_id_of, url
from tests.viewer.test_patient_views import open_patient
from viewer import encrypted_blobs
from viewer.models import AuditEvent, PrefetchedDocument, PrefetchState
from viewer.services import document_key, sniffed_content_type
from viewer.services.prefetch import run_prefetch
from viewer.tasks import purge_prefetched_documents

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.services("redis"),
]

WOUND_PHOTOS = "doc-9990000018-011"  # 4.6 MiB PDF: the only document over 1 MB under 5 MB


@pytest.fixture
def prefetch_on(settings: Any, tmp_path: Path) -> Path:
    """Prefetch switched on, its blobs in a temporary folder; return that folder."""
    folder = tmp_path / "prefetch"
    settings.PREFETCH_ENABLED = True
    settings.PREFETCH_MIN_MB = 1
    settings.PREFETCH_MAX_RETRIES = 1
    settings.STORAGES = {
        **settings.STORAGES,
        "prefetch": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(folder)},
        },
    }
    return folder


@pytest.fixture
def worker(prefetch_on: Path) -> Iterator[None]:
    """A real Celery worker on the real broker, with the queue emptied of older tests' work."""
    celery_app.control.purge()
    with start_worker(
        celery_app, pool="solo", perform_ping_check=False, loglevel="WARNING", shutdown_timeout=30
    ):
        yield


def list_documents(client: Client, scenario: str = "documents") -> str:
    """Open the patient and show their documents, as a clinician would; return the page URL."""
    patient_url = open_patient(client, scenario)
    assert client.get(patient_url).status_code == 200
    return patient_url


def sandbox_document(gp: RecordingSandbox, document_id: str) -> Any:
    return next(d for d in gp.sandbox.record.documents if d.id == document_id)


def wait_for(document_id: str, *states: str, timeout: float = 60) -> PrefetchedDocument:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = PrefetchedDocument.objects.filter(document_id=document_id).first()
        if row is not None and row.state in states:
            return row
        if row is not None and row.state == PrefetchState.FAILED:
            break
        time.sleep(0.1)
    row = PrefetchedDocument.objects.filter(document_id=document_id).first()
    raise AssertionError(f"prefetch of {document_id} never reached {states}: {row}")


def binary_requests(gp: RecordingSandbox, document_id: str) -> list[str]:
    return [path for path in gp.paths if "/Binary/" in path and document_id in path]


def test_listing_a_patient_prefetches_the_large_document_and_its_download_comes_from_the_cache(
    gp: RecordingSandbox, clinician_client: Client, worker: None
) -> None:
    context_id = context_id_of(list_documents(clinician_client))
    ready = wait_for(WOUND_PHOTOS, PrefetchState.READY)
    assert ready.bytes_fetched == sandbox_document(gp, WOUND_PHOTOS).size
    gp.paths.clear()

    response = clinician_client.get(url("document_download", context_id, WOUND_PHOTOS))

    body = body_of(response)
    assert hashlib.sha256(body).hexdigest() == sandbox_document(gp, WOUND_PHOTOS).sha256
    assert binary_requests(gp, WOUND_PHOTOS) == []  # the practice was not asked again
    download = AuditEvent.objects.filter(action="download", document_id=WOUND_PHOTOS).first()
    assert download is not None and download.outcome == "success"
    assert "prefetch cache" in download.detail and download.request_id
    prefetched = AuditEvent.objects.get(action="prefetch", document_id=WOUND_PHOTOS)
    assert prefetched.outcome == "success" and prefetched.username == "clinician"


def test_only_large_documents_are_prefetched_and_each_only_once_however_often_it_is_listed(
    gp: RecordingSandbox, clinician_client: Client, worker: None
) -> None:
    patient_url = list_documents(clinician_client)
    for _ in range(2):
        clinician_client.get(patient_url)
    wait_for(WOUND_PHOTOS, PrefetchState.READY)

    assert list(PrefetchedDocument.objects.values_list("document_id", flat=True)) == [WOUND_PHOTOS]
    assert len(binary_requests(gp, WOUND_PHOTOS)) == 1


def test_the_encrypted_cache_holds_none_of_the_documents_bytes(
    gp: RecordingSandbox, clinician_client: Client, worker: None, prefetch_on: Path
) -> None:
    list_documents(clinician_client)
    wait_for(WOUND_PHOTOS, PrefetchState.READY)
    plaintext = (gp.sandbox.data_dir / sandbox_document(gp, WOUND_PHOTOS).file).read_bytes()
    samples = [plaintext[:64], plaintext[len(plaintext) // 2 : len(plaintext) // 2 + 64]]
    samples += [base64.b64encode(sample)[:64] for sample in samples]

    stored = [path.read_bytes() for path in prefetch_on.rglob("*") if path.is_file()]

    assert len(stored) == 1 and len(stored[0]) >= len(plaintext)
    assert not any(sample in blob for sample in samples for blob in stored)


def test_the_rows_show_the_prefetch_and_the_poll_stops_once_nothing_is_pending(
    gp: RecordingSandbox, clinician_client: Client, prefetch_on: Path
) -> None:
    patient_url = list_documents(clinician_client)
    context_id = context_id_of(patient_url)
    key = document_key(context_id, WOUND_PHOTOS)
    html = clinician_client.get(patient_url).content.decode()
    assert f'id="prefetch-{key}"' in html and "Queued" in html
    status_url = reverse("viewer:prefetch_status", kwargs={"context_id": context_id})
    assert f"{status_url}?key={key}" in html and 'hx-trigger="every 2s"' in html

    queued = clinician_client.get(status_url, {"key": key})
    assert queued.status_code == 200 and 'hx-swap-oob="true"' in queued.content.decode()

    PrefetchedDocument.objects.update(state=PrefetchState.READY)
    ready = clinician_client.get(status_url, {"key": key})
    assert ready.status_code == 286  # htmx stops polling
    assert "Ready" in ready.content.decode()
    assert "every 2s" not in clinician_client.get(patient_url).content.decode()


def test_another_users_prefetch_status_is_a_404(
    gp: RecordingSandbox, clinician_client: Client, prefetch_on: Path
) -> None:
    context_id = context_id_of(list_documents(clinician_client))
    other = Client()
    other.force_login(make_user("another-clinician", "Clinician"))
    status_url = reverse("viewer:prefetch_status", kwargs={"context_id": context_id})
    key = document_key(context_id, WOUND_PHOTOS)
    assert other.get(status_url, {"key": key}).status_code == 404


def test_expired_prefetches_are_purged_with_their_blobs_by_the_beat_task(
    gp: RecordingSandbox, clinician_client: Client, worker: None, prefetch_on: Path
) -> None:
    list_documents(clinician_client)
    wait_for(WOUND_PHOTOS, PrefetchState.READY)
    PrefetchedDocument.objects.update(expires_at=timezone.now() - timezone.timedelta(seconds=1))

    purged = purge_prefetched_documents.delay().get(timeout=30)

    assert purged == 1
    assert not PrefetchedDocument.objects.exists()
    assert not [path for path in prefetch_on.rglob("*") if path.is_file()]


def test_signing_out_purges_the_sessions_prefetched_documents(
    gp: RecordingSandbox, clinician_client: Client, worker: None, prefetch_on: Path
) -> None:
    list_documents(clinician_client)
    wait_for(WOUND_PHOTOS, PrefetchState.READY)

    clinician_client.post(reverse("logout"))

    assert not PrefetchedDocument.objects.exists()
    assert not [path for path in prefetch_on.rglob("*") if path.is_file()]


def test_a_session_that_timed_out_loses_its_prefetched_documents(
    gp: RecordingSandbox, clinician_client: Client, worker: None, prefetch_on: Path
) -> None:
    list_documents(clinician_client)
    wait_for(WOUND_PHOTOS, PrefetchState.READY)
    Session.objects.update(expire_date=timezone.now() - timezone.timedelta(seconds=1))

    purge_prefetched_documents.delay().get(timeout=30)

    assert not PrefetchedDocument.objects.exists()
    assert not [path for path in prefetch_on.rglob("*") if path.is_file()]


def test_a_practice_that_keeps_failing_is_retried_then_the_prefetch_fails_and_is_audited(
    gp: RecordingSandbox, clinician_client: Client, worker: None
) -> None:
    faults = gp.sandbox.binary_faults
    faults[WOUND_PHOTOS] = "stops-half-way"
    try:
        context_id = context_id_of(list_documents(clinician_client))
        failed = wait_for(WOUND_PHOTOS, PrefetchState.FAILED)
    finally:
        faults.pop(WOUND_PHOTOS)

    assert failed.attempts == 2  # PREFETCH_MAX_RETRIES=1: one try, one retry
    assert len(binary_requests(gp, WOUND_PHOTOS)) == 2
    event = AuditEvent.objects.get(action="prefetch", document_id=WOUND_PHOTOS)
    assert event.outcome == "failure" and "gave up after 2 attempts" in event.detail
    assert event.trace_id
    # The download still works, live from the practice.
    response = clinician_client.get(url("document_download", context_id, WOUND_PHOTOS))
    assert (
        hashlib.sha256(body_of(response)).hexdigest() == sandbox_document(gp, WOUND_PHOTOS).sha256
    )


def test_a_tampered_blob_is_never_served_and_the_download_comes_live_instead(
    gp: RecordingSandbox, clinician_client: Client, worker: None, prefetch_on: Path
) -> None:
    context_id = context_id_of(list_documents(clinician_client))
    ready = wait_for(WOUND_PHOTOS, PrefetchState.READY)
    blob = prefetch_on / ready.blob_name
    data = bytearray(blob.read_bytes())
    data[100] ^= 0x01
    blob.write_bytes(bytes(data))
    gp.paths.clear()

    response = clinician_client.get(url("document_download", context_id, WOUND_PHOTOS))

    assert (
        hashlib.sha256(body_of(response)).hexdigest() == sandbox_document(gp, WOUND_PHOTOS).sha256
    )
    assert len(binary_requests(gp, WOUND_PHOTOS)) == 1
    assert not PrefetchedDocument.objects.exists()


def test_a_receptionist_gets_no_prefetch_of_documents_that_are_not_letters(
    gp: RecordingSandbox, prefetch_on: Path, receptionist: Any
) -> None:
    client = Client()
    client.force_login(receptionist)
    list_documents(client)  # the wound photographs are not a letter

    assert not PrefetchedDocument.objects.exists()


def test_a_document_the_practice_calls_octet_stream_downloads_as_the_type_its_bytes_show(
    gp: RecordingSandbox, clinician_client: Client
) -> None:
    record = gp.sandbox.record
    gp.sandbox.record = dataclasses.replace(
        record,
        documents=tuple(
            dataclasses.replace(d, content_type="application/octet-stream") if d.id == PDF else d
            for d in record.documents
        ),
    )
    try:
        context_id = context_id_of(list_documents(clinician_client))
        response = clinician_client.get(url("document_download", context_id, PDF))
        body_of(response)
    finally:
        gp.sandbox.record = record

    assert response["Content-Type"] == "application/pdf"
    assert ".pdf" in response["Content-Disposition"]


def test_sniffing_recognises_binary_formats_but_never_makes_html_of_anything() -> None:
    assert sniffed_content_type("application/octet-stream", b"%PDF-1.7\n") == "application/pdf"
    assert sniffed_content_type("application/octet-stream", b"\x89PNG\r\n\x1a\n" + bytes(30)) == (
        "image/png"
    )
    html = b"<!DOCTYPE html><html><script>alert(1)</script>"
    assert sniffed_content_type("application/octet-stream", html) == "application/octet-stream"
    assert sniffed_content_type("text/plain", b"%PDF-1.7\n") == "text/plain"


def make_row(gp: RecordingSandbox, clinician_client: Client, **fields: Any) -> PrefetchedDocument:
    """A prefetch row as listing the patient makes it (no worker runs), then changed."""
    list_documents(clinician_client)
    PrefetchedDocument.objects.update(**fields)
    return PrefetchedDocument.objects.get()


def test_a_prefetch_that_waited_long_in_the_queue_is_not_failed_by_the_sweep_while_it_fetches(
    gp: RecordingSandbox, clinician_client: Client, prefetch_on: Path, monkeypatch: Any
) -> None:
    long_ago = timezone.now() - timezone.timedelta(minutes=10)
    row = make_row(gp, clinician_client, created_at=long_ago, updated_at=long_ago)
    write = encrypted_blobs.write

    def beat_fires_mid_fetch(*args: Any, **kwargs: Any) -> tuple[str, int]:
        purge_prefetched_documents()
        return write(*args, **kwargs)

    monkeypatch.setattr(encrypted_blobs, "write", beat_fires_mid_fetch)

    assert run_prefetch(row.pk, final_attempt=True) == "ready"
    assert PrefetchedDocument.objects.get().state == PrefetchState.READY


def test_a_fetch_whose_worker_died_is_failed_by_the_sweep_and_audited(
    gp: RecordingSandbox, clinician_client: Client, prefetch_on: Path
) -> None:
    long_ago = timezone.now() - timezone.timedelta(minutes=10)
    make_row(gp, clinician_client, state=PrefetchState.FETCHING, updated_at=long_ago)

    purge_prefetched_documents()

    assert PrefetchedDocument.objects.get().state == PrefetchState.FAILED
    event = AuditEvent.objects.get(action="prefetch")
    assert event.outcome == "failure" and "stopped part way" in event.detail
