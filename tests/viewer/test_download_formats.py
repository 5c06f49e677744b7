"""Every document the sandbox's `documents` patient has comes through the download byte for byte."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from django.test import Client

from tests.viewer.conftest import RecordingSandbox, nhs_number_of
from tests.viewer.test_document_views import PDF, body_of, context_id_of, url
from tests.viewer.test_patient_views import open_patient
from viewer.models import AuditEvent

pytestmark = pytest.mark.django_db


def retrievable_documents(gp: RecordingSandbox) -> list[object]:
    nhs = nhs_number_of("documents")
    return [
        d
        for d in gp.sandbox.record.documents
        if d.patient_nhs == nhs and d.file is not None and d.size <= 5 * 1024 * 1024
    ]


def test_every_format_downloads_byte_identical_to_the_practices_file(
    gp: RecordingSandbox, clinician_client: Client
) -> None:
    context_id = context_id_of(open_patient(clinician_client, "documents"))
    documents = retrievable_documents(gp)
    formats = {d.content_type for d in documents}  # type: ignore[attr-defined]
    assert len(formats) >= 10  # PDF, TIFF, BMP, JPEG, PNG, Word, RTF, HTML, XML, text, audio…

    mismatched = []
    for document in documents:
        response = clinician_client.get(url("document_download", context_id, document.id))  # type: ignore[attr-defined]
        digest = hashlib.sha256(body_of(response)).hexdigest()
        if response.status_code != 200 or digest != document.sha256:  # type: ignore[attr-defined]
            mismatched.append((document.id, document.content_type, response.status_code))  # type: ignore[attr-defined]
    assert mismatched == []


@pytest.fixture
def invalid_base64(gp: RecordingSandbox) -> Iterator[str]:
    faults = gp.sandbox.binary_faults
    faults[PDF] = "invalid-base64"
    yield PDF
    faults.pop(PDF)


def test_a_document_whose_base64_is_invalid_is_never_offered_as_a_file(
    gp: RecordingSandbox, clinician_client: Client, invalid_base64: str
) -> None:
    context_id = context_id_of(open_patient(clinician_client, "documents"))

    response = clinician_client.get(url("document_download", context_id, invalid_base64))

    # The damage is in the first bytes, so it is caught before any is sent: an error page.
    assert response.status_code == 502
    page = response.content.decode()
    assert "could not be read" in page and "which is not base64" in page
    assert "give them this trace ID" in page
    event = AuditEvent.objects.filter(action="download", document_id=invalid_base64).first()
    assert event is not None and event.outcome == "failure"
