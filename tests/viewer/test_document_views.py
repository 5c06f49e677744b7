"""The document page, the streamed download and the inline preview, against the sandbox."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.http import StreamingHttpResponse
from django.test import Client
from django.urls import reverse

from gpconnect import GPConnectError
from tests.viewer.conftest import RecordingSandbox, make_user
from tests.viewer.test_patient_views import open_patient
from viewer.models import AuditEvent, PrintJob
from viewer.services import _Relay, coalesced, document_key, document_stream

pytestmark = pytest.mark.django_db

PDF = "doc-9990000018-001"  # Inpatient discharge summary
PNG = "doc-9990000018-026"
TEXT_PASSWD = "doc-9990000018-019"  # titled "../../etc/passwd"
DOCX_BOLD = "doc-9990000018-020"  # titled "<b>bold</b> care plan"
DOCX = "doc-9990000018-028"
HTML = "doc-9990000018-031"
OCTET_STREAM = "doc-9990000018-038"
TIFF = "doc-9990000018-023"
XML = "doc-9990000018-034"
WAV = "doc-9990000018-036"
AU = "doc-9990000018-037"  # audio/x-au: no browser plays it
PLACEHOLDER = "doc-9990000026-001"  # MRI lumbar spine: over 5 MB, no url


def context_id_of(patient_url: str) -> str:
    return patient_url.rstrip("/").rsplit("/", 1)[1]


def url(name: str, context_id: str, document_id: str) -> str:
    key = document_key(context_id, document_id)
    return reverse(f"viewer:{name}", kwargs={"context_id": context_id, "document_id": key})


@pytest.fixture
def context_id(gp: RecordingSandbox, clinician_client: Client) -> str:
    return context_id_of(open_patient(clinician_client, "documents"))


@pytest.fixture
def placeholder_context_id(gp: RecordingSandbox, clinician_client: Client) -> str:
    return context_id_of(open_patient(clinician_client, "placeholders"))


def body_of(response: StreamingHttpResponse) -> bytes:
    return b"".join(response.streaming_content)  # type: ignore[arg-type]


@pytest.fixture
def stops_half_way(gp: RecordingSandbox) -> Iterator[str]:
    faults = gp.sandbox.binary_faults
    saved = dict(faults)
    faults[PDF] = "stops-half-way"
    yield PDF
    faults.clear()
    faults.update(saved)


@pytest.fixture
def not_json(gp: RecordingSandbox) -> Iterator[str]:
    faults = gp.sandbox.binary_faults
    saved = dict(faults)
    faults[PDF] = "non-json"
    yield PDF
    faults.clear()
    faults.update(saved)


def test_the_document_page_shows_the_metadata_the_banner_and_a_pdf_preview(
    clinician_client: Client, context_id: str
) -> None:
    response = clinician_client.get(url("document", context_id, PDF))
    html = response.content.decode()
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    assert "viewer-patient-banner" in html and "WHITAKER, Margaret Ann (Mrs)" in html
    assert "Inpatient discharge summary - community-acquired pneumonia" in html
    assert 'class="nhsuk-summary-list' in html
    assert "Inpatient final discharge letter" in html and "PDF" in html
    # pdf.js draws the PDF from the authenticated inline URL, the same in every browser.
    assert f'data-pdf-preview="screen" data-src="{url("document_inline", context_id, PDF)}"' in html
    assert 'src="/static/viewer/pdf-preview.js"' in html
    assert "<iframe" not in html
    assert f'href="{url("document_download", context_id, PDF)}">Download' in html
    assert f'action="{url("document_print", context_id, PDF)}"' in html
    assert AuditEvent.objects.filter(action="view", document_id=PDF, outcome="success").exists()


def test_the_document_page_shows_an_image_preview_as_an_img(
    clinician_client: Client, context_id: str
) -> None:
    html = clinician_client.get(url("document", context_id, PNG)).content.decode()
    assert f'<img src="{url("document_inline", context_id, PNG)}"' in html


@pytest.mark.parametrize("document_id", [OCTET_STREAM, AU])
def test_formats_neither_the_browser_nor_the_server_can_show_say_they_cannot_be_previewed(
    clinician_client: Client, context_id: str, document_id: str
) -> None:
    html = clinician_client.get(url("document", context_id, document_id)).content.decode()
    assert "This format cannot be previewed" in html
    assert "<iframe" not in html and "<img" not in html
    assert url("document_download", context_id, document_id) in html


@pytest.mark.parametrize("document_id", [DOCX, HTML, TIFF, XML])
def test_formats_the_server_converts_get_a_preview_region_that_asks_for_the_conversion(
    clinician_client: Client, context_id: str, document_id: str
) -> None:
    html = clinician_client.get(url("document", context_id, document_id)).content.decode()
    assert "This format cannot be previewed" not in html
    assert f'hx-get="{url("document_preview", context_id, document_id)}"' in html
    assert 'hx-trigger="load"' in html and "Preparing the preview" in html
    assert "<iframe" not in html  # nothing of the document itself until it is converted


def test_a_recording_in_a_format_browsers_play_gets_the_browsers_own_player(
    clinician_client: Client, context_id: str
) -> None:
    html = clinician_client.get(url("document", context_id, WAV)).content.decode()
    assert (
        f'<audio class="viewer-document__media" controls preload="metadata" src="{url("document_inline", context_id, WAV)}"'
        in html
    )
    assert url("document_print", context_id, WAV) not in html  # a recording is not printed


def test_a_placeholder_page_gives_the_reason_and_no_download(
    clinician_client: Client, placeholder_context_id: str
) -> None:
    response = clinician_client.get(url("document", placeholder_context_id, PLACEHOLDER))
    html = response.content.decode()
    assert response.status_code == 200
    assert "Not available" in html and "cannot send it through GP Connect" in html
    assert "greater than maximum allowable" in html  # the practice's own reason
    assert "/download" not in html and "<iframe" not in html


def test_the_documents_table_links_each_title_to_its_document_page(
    clinician_client: Client, context_id: str
) -> None:
    html = clinician_client.get(reverse("viewer:patient", args=[context_id])).content.decode()
    assert f'<a href="{url("document", context_id, PDF)}">' in html


@pytest.mark.parametrize("name", ["document", "document_download", "document_inline"])
def test_anonymous_users_are_sent_to_sign_in(client: Client, name: str) -> None:
    response = client.get(url(name, "anything", PDF))
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("name", ["document", "document_download", "document_inline"])
def test_an_auditor_gets_403(auditor: User, name: str) -> None:
    client = Client()
    client.force_login(auditor)
    assert client.get(url(name, "anything", PDF)).status_code == 403


@pytest.mark.parametrize("name", ["document", "document_download", "document_inline"])
def test_another_users_document_url_is_a_404_and_audited(
    clinician_client: Client, context_id: str, name: str
) -> None:
    other = Client()
    other.force_login(make_user("other", "Clinician"))
    assert other.get(url(name, context_id, PDF)).status_code == 404
    assert AuditEvent.objects.filter(action="access_denied", username="other").exists()


def test_a_document_not_in_the_patient_context_is_a_404_and_audited(
    clinician_client: Client, context_id: str
) -> None:
    # Another patient's document, and the provider's own id instead of the opaque one.
    for path in (
        url("document", context_id, PLACEHOLDER),
        reverse("viewer:document", args=[context_id, PDF]),
    ):
        assert clinician_client.get(path).status_code == 404
    denied = AuditEvent.objects.filter(action="access_denied", username="clinician")
    assert denied.count() == 2
    assert denied.filter(document_id=PDF).exists()


def test_the_download_streams_the_sandboxs_document_with_safe_headers_and_is_audited(
    gp: RecordingSandbox, clinician_client: Client, context_id: str
) -> None:
    response = clinician_client.get(url("document_download", context_id, PDF))
    assert isinstance(response, StreamingHttpResponse)
    expected = next(d for d in gp.sandbox.record.documents if d.id == PDF).sha256
    assert hashlib.sha256(body_of(response)).hexdigest() == expected
    assert response["Content-Type"] == "application/pdf"
    disposition = response["Content-Disposition"]
    assert disposition.startswith('attachment; filename="')
    assert "filename*=UTF-8''" in disposition
    assert "community-acquired pneumonia.pdf" in disposition
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "no-store" in response["Cache-Control"]
    assert not response.has_header("Content-Length")
    event = AuditEvent.objects.get(action="download", document_id=PDF)
    assert event.outcome == "success" and event.trace_id


def test_the_inline_preview_serves_a_pdf_in_a_csp_sandbox(
    clinician_client: Client, context_id: str
) -> None:
    response = clinician_client.get(url("document_inline", context_id, PDF))
    assert isinstance(response, StreamingHttpResponse)
    assert body_of(response).startswith(b"%PDF")
    assert response["Content-Disposition"].startswith("inline; filename=")
    assert response["Content-Security-Policy"] == "sandbox; default-src 'none'"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "SAMEORIGIN"


@pytest.mark.parametrize("document_id", [HTML, DOCX, OCTET_STREAM])
def test_the_inline_preview_refuses_formats_outside_the_allow_list(
    gp: RecordingSandbox, clinician_client: Client, context_id: str, document_id: str
) -> None:
    gp.paths.clear()
    response = clinician_client.get(url("document_inline", context_id, document_id))
    assert response.status_code == 404
    assert not any("/Binary/" in path for path in gp.paths)


def test_a_provider_failure_before_the_first_byte_shows_the_error_panel_with_the_trace_id(
    clinician_client: Client, context_id: str, not_json: str
) -> None:
    response = clinician_client.get(url("document_download", context_id, not_json))
    html = response.content.decode()
    assert response.status_code == 502
    assert "viewer-error-panel" in html and "give them this trace ID" in html
    event = AuditEvent.objects.get(action="download", document_id=not_json)
    assert event.outcome == "failure" and event.trace_id and event.trace_id in html


def test_a_failure_part_way_through_aborts_the_download_and_is_audited(
    clinician_client: Client, context_id: str, stops_half_way: str
) -> None:
    response = clinician_client.get(url("document_download", context_id, stops_half_way))
    assert isinstance(response, StreamingHttpResponse)
    with pytest.raises(GPConnectError):
        body_of(response)
    event = AuditEvent.objects.get(action="download", document_id=stops_half_way)
    assert event.outcome == "failure" and event.trace_id
    assert "part way" in event.detail


def test_a_placeholders_download_is_a_404_that_says_why_and_is_never_fetched(
    gp: RecordingSandbox, clinician_client: Client, placeholder_context_id: str
) -> None:
    gp.paths.clear()
    response = clinician_client.get(url("document_download", placeholder_context_id, PLACEHOLDER))
    html = response.content.decode()
    assert response.status_code == 404
    assert "This document cannot be retrieved" in html and "greater than maximum" in html
    assert not any("/Binary/" in path for path in gp.paths)
    assert AuditEvent.objects.filter(
        action="download", document_id=PLACEHOLDER, outcome="denied"
    ).exists()


@pytest.mark.parametrize(
    ("document_id", "ending"),
    [(TEXT_PASSWD, " etc passwd.txt"), (DOCX_BOLD, " bold care plan.docx")],
)
def test_download_filenames_have_no_path_or_markup_characters(
    clinician_client: Client, context_id: str, document_id: str, ending: str
) -> None:
    response = clinician_client.get(url("document_download", context_id, document_id))
    assert isinstance(response, StreamingHttpResponse)
    body_of(response)
    filename = response["Content-Disposition"].split('filename="', 1)[1].split('"', 1)[0]
    assert filename.endswith(ending)
    for unsafe in ("/", "\\", "..", "<", ">"):
        assert unsafe not in filename


def test_a_receptionist_may_view_letters_but_not_download_or_see_other_documents(
    gp: RecordingSandbox, receptionist: User
) -> None:
    client = Client()
    client.force_login(receptionist)
    context_id = context_id_of(open_patient(client, "documents"))
    letter = "doc-9990000018-012"  # Physiotherapy discharge letter
    html = client.get(url("document", context_id, letter)).content.decode()
    assert "Physiotherapy discharge letter" in html and "/download" not in html
    assert client.get(url("document_download", context_id, letter)).status_code == 403
    assert client.get(url("document", context_id, PNG)).status_code == 404  # a photograph


def test_a_download_abandoned_part_way_releases_the_provider_and_is_audited(
    clinician: User, clinician_client: Client, context_id: str
) -> None:
    session = clinician_client.session
    stream = document_stream(
        user=clinician,
        context_id=context_id,
        document_id=document_key(context_id, PNG),
        session=session,
    )
    chunks = iter(stream)
    assert next(chunks)
    stream.close()
    event = AuditEvent.objects.get(action="download", document_id=PNG)
    assert event.outcome == "failure" and "abandoned" in event.detail
    # Closing one that was never read is quiet, and audits nothing more.
    document_stream(
        user=clinician,
        context_id=context_id,
        document_id=document_key(context_id, PDF),
        session=session,
    ).close()
    assert not AuditEvent.objects.filter(action="download", document_id=PDF).exists()


def relay_of(chunks: Iterator[bytes], notes: list[tuple[str, ...]]) -> _Relay:
    return _Relay(
        chunks,
        note=lambda *note: notes.append(note),
        what="download",
        source="live from the practice",
        trace_id="trace-1",
    )


def test_a_download_sent_in_full_is_audited_once_before_the_server_ends_the_body() -> None:
    notes: list[tuple[str, ...]] = []
    relay = relay_of(iter([b"ab", b"c"]), notes)
    assert b"".join(relay) == b"abc"
    # Audited before the terminating chunk: a failed audit fails the download.
    assert notes == [("success", "3 bytes sent live from the practice", "trace-1")]
    relay.close()
    relay.close()
    assert len(notes) == 1


def test_a_download_whose_audit_row_cannot_be_written_fails_instead_of_completing() -> None:
    def note(*_: str) -> None:
        raise RuntimeError("the audit database is unavailable")

    relay = _Relay(iter([b"abc"]), note=note, what="download", source="live", trace_id="trace-1")
    assert next(relay) == b"abc"
    with pytest.raises(RuntimeError):
        next(relay)  # the server aborts the response: no terminating chunk


def test_a_download_is_written_in_pieces_of_192_kib_and_nothing_is_held_back() -> None:
    pieces = [bytes([i]) * 48 * 1024 for i in range(9)] + [b"end"]
    written = list(coalesced(iter(pieces)))
    assert b"".join(written) == b"".join(pieces)
    assert [len(piece) for piece in written] == [192 * 1024, 192 * 1024, 48 * 1024 + 3]


def test_a_slow_practices_bytes_are_written_as_they_come_not_held_for_a_full_piece() -> None:
    def slowly() -> Iterator[bytes]:
        for piece in (b"a" * 1000, b"b" * 1000, b"c" * 1000):
            yield piece
            time.sleep(0.03)

    written = list(coalesced(slowly(), hold_seconds=0.01))
    assert [len(piece) for piece in written] == [2000, 1000]


def test_an_unexpected_error_part_way_fails_the_download_and_is_audited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"abc"
        raise ValueError("a bug")

    notes: list[tuple[str, ...]] = []
    relay = relay_of(chunks(), notes)
    assert next(relay) == b"abc"
    with pytest.raises(ValueError):
        next(relay)
    relay.close()
    assert notes == [
        (
            "failure",
            "stopped part way after 3 bytes (live from the practice): ValueError: unexpected error",
            "trace-1",
        )
    ]
    assert "trace ID trace-1" in caplog.text


def test_documents_over_the_size_limit_are_explained_and_never_fetched(
    gp: RecordingSandbox, clinician_client: Client, context_id: str, settings: Any
) -> None:
    settings.GPCONNECT_MAX_DOCUMENT_MB = 0  # every document is now too large
    html = clinician_client.get(url("document", context_id, PDF)).content.decode()
    assert "Too large" in html and "/download" not in html and "<iframe" not in html
    gp.paths.clear()
    response = clinician_client.get(url("document_download", context_id, PDF))
    assert response.status_code == 404
    assert "This document is too large to retrieve" in response.content.decode()
    assert not any("/Binary/" in path for path in gp.paths)


def test_print_queues_a_print_pdf_and_shows_its_progress_page(
    clinician_client: Client, context_id: str
) -> None:
    response = clinician_client.post(url("document_print", context_id, PDF))
    job = PrintJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse(
        "viewer:print_job", kwargs={"context_id": context_id, "token": job.token}
    )
    assert job.provenance["patient"] == (
        "WHITAKER, Margaret Ann (Mrs) · NHS No. 999 000 0018 · Born 14-Mar-1948"
    )
    assert job.provenance["printed"].startswith(
        "Printed by Dr Alex Clinician (clinician), Clinician, at "
    )
    assert [d["document_id"] for d in job.documents] == [PDF]
    assert job.documents[0]["practice"] == "Riverside Medical Practice (A20047)"

    page = clinician_client.get(response["Location"])
    html = page.content.decode()
    assert page.status_code == 200 and "no-store" in page["Cache-Control"]
    assert "Preparing the document for printing" in html and 'hx-trigger="every 1s"' in html
    status_url = reverse(
        "viewer:print_status", kwargs={"context_id": context_id, "token": job.token}
    )
    assert clinician_client.get(status_url).status_code == 200  # still polling
    # Nothing is printed (or audited as printed) until the PDF has been built.
    assert not AuditEvent.objects.filter(action="print").exists()


def test_pressing_print_again_or_reloading_shows_the_same_print_and_a_link_makes_none(
    clinician_client: Client, context_id: str
) -> None:
    first = clinician_client.post(url("document_print", context_id, PDF))
    again = clinician_client.post(url("document_print", context_id, PDF))

    assert first.status_code == again.status_code == 302
    assert first["Location"] == again["Location"]
    assert PrintJob.objects.count() == 1
    assert clinician_client.get(url("document_print", context_id, PDF)).status_code == 405
    assert clinician_client.get(first["Location"]).status_code == 200  # a reload just shows it
    assert PrintJob.objects.count() == 1


def test_print_without_the_forms_csrf_token_is_refused(context_id: str, clinician: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(clinician)
    assert client.post(url("document_print", context_id, PDF)).status_code == 403
    assert not PrintJob.objects.exists()


@pytest.mark.parametrize("document_id", [OCTET_STREAM, AU])
def test_formats_that_cannot_be_printed_have_no_print_button_and_the_refusal_is_audited(
    clinician_client: Client, context_id: str, document_id: str
) -> None:
    page = clinician_client.get(url("document", context_id, document_id)).content.decode()
    assert url("document_print", context_id, document_id) not in page
    assert clinician_client.post(url("document_print", context_id, document_id)).status_code == 404
    assert AuditEvent.objects.get(action="print").outcome == "denied"
    assert not PrintJob.objects.exists()


def test_a_placeholder_cannot_be_printed(
    clinician_client: Client, placeholder_context_id: str
) -> None:
    response = clinician_client.post(url("document_print", placeholder_context_id, PLACEHOLDER))
    assert response.status_code == 404
    assert AuditEvent.objects.get(action="print").outcome == "denied"


def test_printing_another_users_document_is_a_404(context_id: str, db: None) -> None:
    other = Client()
    other.force_login(make_user("someoneelse", "Clinician"))
    assert other.post(url("document_print", context_id, PDF)).status_code == 404
    assert not AuditEvent.objects.filter(action="print").exists()


def test_an_auditor_may_not_print(context_id: str, auditor: User) -> None:
    client = Client()
    client.force_login(auditor)
    assert client.post(url("document_print", context_id, PDF)).status_code == 403


def test_a_receptionist_prints_a_letter_though_they_may_not_download_it(
    gp: RecordingSandbox, receptionist: User
) -> None:
    client = Client()
    client.force_login(receptionist)
    context = context_id_of(open_patient(client, "documents"))
    page = client.get(url("document", context, PDF)).content.decode()
    assert url("document_print", context, PDF) in page
    assert url("document_download", context, PDF) not in page
    response = client.post(url("document_print", context, PDF))
    assert response.status_code == 302
    assert (
        PrintJob.objects.get()
        .provenance["printed"]
        .startswith("Printed by Dr Alex Receptionist (receptionist), Receptionist, at ")
    )
