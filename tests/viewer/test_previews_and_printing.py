"""Server-made previews, print PDFs and batch printing, with a real Celery worker.

The worker runs in a thread of the test process (as in test_prefetch.py), consuming from
the configured broker; the database is transactional so it sees what requests committed.
Hostile files are served by the sandbox in place of real documents for one test each.
"""

from __future__ import annotations

import http.server
import io
import os
import struct
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from django.test import Client
from django.urls import reverse
from pypdf import PdfReader

from config.celery import app as celery_app
from tests.viewer.conftest import RecordingSandbox, make_user
from tests.viewer.test_document_views import (
    DOCX,
    HTML,
    OCTET_STREAM,
    PDF,
    TIFF,
    XML,
    body_of,
    context_id_of,
    url,
)
from tests.viewer.test_prefetch import list_documents, sandbox_document
from viewer.models import AuditEvent, ConversionState, ConvertedDocument, PrintJob
from viewer.services import previews, printing
from viewer.services.previews import ConversionFailed
from viewer.tasks import purge_converted_documents

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.services("redis"),
]

BMP = "doc-9990000018-027"
RTF = "doc-9990000018-029"
TEXT = "doc-9990000018-033"
DERMATOLOGY_LETTER = "doc-9990000018-006"  # 1 page
PHYSIO_LETTER = "doc-9990000018-012"  # 2 pages, typed "Letter"
DVLA_LETTER = "doc-9990000018-028"  # a Word letter
NOTICE = "Retrieved from the GP record via GP Connect; it may not be the latest version."


@pytest.fixture
def blobs(settings: Any, tmp_path: Path) -> Path:
    """The encrypted blobs in a temporary folder (prefetch stays off); return that folder."""
    folder = tmp_path / "blobs"
    settings.STORAGES = {
        **settings.STORAGES,
        "prefetch": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(folder)},
        },
    }
    return folder


@pytest.fixture
def worker(blobs: Path) -> Iterator[None]:
    """A real Celery worker on the real broker, with the queue emptied of older tests' work."""
    celery_app.control.purge()
    with start_worker(
        celery_app, pool="solo", perform_ping_check=False, loglevel="WARNING", shutdown_timeout=60
    ):
        yield


def wait_for_conversion(document_id: str, timeout: float = 90) -> ConvertedDocument:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = ConvertedDocument.objects.filter(document_id=document_id).first()
        if row is not None and not row.pending:
            return row
        time.sleep(0.1)
    raise AssertionError(f"the conversion of {document_id} never finished")


def wait_for_print(timeout: float = 120) -> PrintJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = PrintJob.objects.order_by("-pk").first()
        if job is not None and not job.pending:
            return job
        time.sleep(0.1)
    raise AssertionError("the print never finished")


def preview(client: Client, context_id: str, document_id: str) -> tuple[int, str]:
    """Ask for the preview region as htmx does; return the status and the HTML."""
    response = client.get(url("document_preview", context_id, document_id), HTTP_HX_REQUEST="true")
    return response.status_code, response.content.decode()


def converted(client: Client, context_id: str, document_id: str, part: int) -> Any:
    key = url("document", context_id, document_id).rstrip("/").rsplit("/", 1)[1]
    return client.get(
        reverse(
            "viewer:document_converted",
            kwargs={"context_id": context_id, "document_id": key, "part": part},
        )
    )


def pdf_text(data: bytes) -> list[str]:
    """Return each page's text with its whitespace made single spaces."""
    return [" ".join(page.extract_text().split()) for page in PdfReader(io.BytesIO(data)).pages]


def running(pid: int) -> bool:
    """Return True if the process exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@contextmanager
def served_instead(gp: RecordingSandbox, document_id: str, data: bytes) -> Iterator[None]:
    """Have the sandbox send `data` as this document's bytes for a while."""
    path = gp.sandbox.data_dir / sandbox_document(gp, document_id).file
    saved = path.read_bytes()
    path.write_bytes(data)
    try:
        yield
    finally:
        path.write_bytes(saved)


def tiff_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A 160-byte TIFF that claims 10 gigapixels: a decompression bomb's header."""
    entries = [  # (tag, type, value): 3 = SHORT, 4 = LONG; sorted by tag as TIFF requires
        (256, 4, width),
        (257, 4, height),
        (258, 3, 1),
        (259, 3, 4),  # CCITT group 4
        (262, 3, 0),
        (273, 4, 8 + 2 + 9 * 12 + 4),
        (277, 3, 1),
        (278, 4, height),
        (279, 4, 16),
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        packed = struct.pack("<I", value) if kind == 4 else struct.pack("<HH", value, 0)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + b"\x00" * 16


# Previews ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document_id", "kind", "parts"),
    [(TIFF, "pages", 3), (BMP, "pages", 1), (DOCX, "pdf", 1), (RTF, "pdf", 1), (XML, "text", 1)],
)
def test_formats_browsers_cannot_show_are_converted_by_the_worker_into_a_preview(
    gp: RecordingSandbox,
    clinician_client: Client,
    worker: None,
    document_id: str,
    kind: str,
    parts: int,
) -> None:
    context_id = context_id_of(list_documents(clinician_client))

    status, html = preview(clinician_client, context_id, document_id)
    assert status == 200 and 'hx-trigger="every 1s"' in html  # polling while it converts
    row = wait_for_conversion(document_id)
    status, html = preview(clinician_client, context_id, document_id)

    assert row.state == ConversionState.READY and row.pages == parts
    assert status == 286  # htmx stops polling
    assert f'data-conversion="{kind}"' in html
    first = converted(clinician_client, context_id, document_id, 1)
    body = body_of(first)
    assert first["Content-Security-Policy"].startswith("sandbox; default-src 'none'")
    assert first["X-Content-Type-Options"] == "nosniff"
    if kind == "pages":
        assert body.startswith(b"\x89PNG") and f"Page 1 of {parts}" in html
        assert converted(clinician_client, context_id, document_id, parts + 1).status_code == 404
    elif kind == "pdf":
        assert len(PdfReader(io.BytesIO(body)).pages) >= 1
        assert "data-pdf-preview" in html
    else:
        assert b"PathologyReport" in body and first["Content-Type"].startswith("text/plain")
        assert "<iframe" in html and " sandbox " in html
    success = AuditEvent.objects.get(
        action="view",
        document_id=document_id,
        outcome="success",
        detail__startswith="preview conversion",
    )
    assert success.username == "clinician" and success.trace_id


def test_html_is_shown_sanitised_in_a_sandboxed_frame_with_no_script_left(
    gp: RecordingSandbox, clinician_client: Client, worker: None
) -> None:
    context_id = context_id_of(list_documents(clinician_client))
    preview(clinician_client, context_id, HTML)
    wait_for_conversion(HTML)
    _, html = preview(clinician_client, context_id, HTML)

    response = converted(clinician_client, context_id, HTML, 1)
    body = body_of(response).decode()
    assert "<iframe" in html and " sandbox " in html
    assert "Electronic discharge summary" in body and "<table" in body
    assert "<script" not in body and "SCRIPT EXECUTED" not in body and "onclick" not in body
    assert "script-src" not in response["Content-Security-Policy"]  # default-src 'none' rules
    assert response["Content-Security-Policy"].startswith("sandbox; default-src 'none'")


def test_a_tiff_bomb_is_refused_with_a_clear_message_and_the_worker_carries_on(
    gp: RecordingSandbox, clinician_client: Client, worker: None
) -> None:
    context_id = context_id_of(list_documents(clinician_client))
    with served_instead(gp, TIFF, tiff_bomb()):
        preview(clinician_client, context_id, TIFF)
        failed = wait_for_conversion(TIFF, timeout=30)
    status, html = preview(clinician_client, context_id, TIFF)

    assert failed.state == ConversionState.FAILED
    assert status == 286 and "The preview could not be made" in html
    assert "too large to convert safely" in html
    assert not failed.blob_names
    assert AuditEvent.objects.filter(action="view", document_id=TIFF, outcome="failure").exists()
    # The same worker goes straight on to the next conversion.
    preview(clinician_client, context_id, BMP)
    assert wait_for_conversion(BMP, timeout=30).state == ConversionState.READY


def test_a_60_megapixel_page_is_refused_by_preview_max_pixels_below_pillows_own_limit() -> None:
    from django.conf import settings
    from PIL import Image

    # About 60.8 MP: past PREVIEW_MAX_PIXELS (50 MP), short of where Pillow warns (~89 MP).
    width = height = 7800
    assert settings.PREVIEW_MAX_PIXELS < width * height < (Image.MAX_IMAGE_PIXELS or 0)

    with pytest.raises(ConversionFailed) as refused:
        previews.image_pages(tiff_bomb(width, height))

    assert str(refused.value) == (
        "Page 1 of this image is 7800 × 7800 pixels, too large to convert safely. "
        "Download it to open it."
    )
    assert refused.value.__cause__ is None  # this service's check, not Pillow's bomb error


def test_two_requests_for_the_same_preview_make_one_conversion_and_queue_it_once(
    gp: RecordingSandbox, clinician_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    queued: list[int] = []
    monkeypatch.setattr(previews, "_enqueue", queued.append)
    context_id = context_id_of(list_documents(clinician_client))

    first = preview(clinician_client, context_id, BMP)
    second = preview(clinician_client, context_id, BMP)

    assert first[0] == second[0] == 200 and 'hx-trigger="every 1s"' in second[1]
    row = ConvertedDocument.objects.get()
    assert queued == [row.pk]


def test_a_failed_preview_shows_its_trace_id_and_try_again_makes_a_new_one(
    gp: RecordingSandbox, clinician_client: Client, worker: None
) -> None:
    context_id = context_id_of(list_documents(clinician_client))
    with served_instead(gp, TIFF, tiff_bomb()):
        preview(clinician_client, context_id, TIFF)
        failed = wait_for_conversion(TIFF, timeout=30)
        _, html = preview(clinician_client, context_id, TIFF)
    key = url("document", context_id, TIFF).rstrip("/").rsplit("/", 1)[1]
    retry = reverse(
        "viewer:document_preview_retry", kwargs={"context_id": context_id, "document_id": key}
    )

    assert failed.trace_id and failed.trace_id in html
    assert "Try again" in html and f'hx-post="{retry}"' in html
    response = clinician_client.post(retry, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and 'hx-trigger="every 1s"' in response.content.decode()
    again = wait_for_conversion(TIFF)
    assert again.pk != failed.pk and again.state == ConversionState.READY
    assert ConvertedDocument.objects.filter(document_id=TIFF).count() == 1


def test_a_receptionist_is_not_told_to_download_what_they_may_not() -> None:
    failure = "This image is too large to convert safely. Download it to open it."
    for_clinician = previews.ConversionStatus("Scan", "pages", "failed", 0, 0, failure)
    for_receptionist = previews.ConversionStatus(
        "Scan", "pages", "failed", 0, 0, failure, can_download=False
    )
    assert for_clinician.reason == failure
    assert for_receptionist.reason == "This image is too large to convert safely."


@pytest.mark.parametrize(
    ("message", "for_receptionist"),
    [
        (
            "The document converter is not available on this server. Download it to open it.",
            "The document converter is not available on this server.",
        ),
        (previews.TOOK_TOO_LONG, "Preparing the preview took too long and was stopped. Try again."),
        (
            printing.cannot_print_reason("audio/x-au"),
            "This format cannot be printed (Audio).",
        ),
    ],
)
def test_no_preview_or_print_failure_tells_a_receptionist_to_download(
    message: str, for_receptionist: str
) -> None:
    assert previews.without_download_advice(message) == for_receptionist
    assert "ownload" not in for_receptionist


def test_a_poll_for_a_print_that_has_expired_stops_with_one_message_in_place(
    gp: RecordingSandbox, clinician_client: Client
) -> None:
    from django.utils import timezone

    context_id = context_id_of(list_documents(clinician_client))
    job_page = clinician_client.post(url("document_print", context_id, DERMATOLOGY_LETTER))
    PrintJob.objects.update(expires_at=timezone.now() - timezone.timedelta(seconds=1))

    response = clinician_client.get(f"{job_page['Location']}status", HTTP_HX_REQUEST="true")

    assert response.status_code == 286  # the poll stops
    assert "HX-Retarget" not in response  # nothing is added above the page at each poll
    assert "This print is no longer available" in response.content.decode()


def test_a_preview_poll_after_the_patient_has_gone_stops_with_one_message_in_place(
    gp: RecordingSandbox, clinician_client: Client
) -> None:
    list_documents(clinician_client)
    # A context this session no longer has (the patient was closed, or another tab's).
    response = clinician_client.get(
        url("document_preview", "gone0000context", BMP), HTTP_HX_REQUEST="true"
    )

    assert response.status_code == 286
    assert "HX-Retarget" not in response
    assert "This preview is no longer available" in response.content.decode()


def test_another_users_converted_preview_is_a_404(
    gp: RecordingSandbox, clinician_client: Client, worker: None
) -> None:
    context_id = context_id_of(list_documents(clinician_client))
    preview(clinician_client, context_id, BMP)
    wait_for_conversion(BMP)
    other = Client()
    other.force_login(make_user("another-clinician", "Clinician"))

    assert converted(other, context_id, BMP, 1).status_code == 404
    assert other.get(url("document_preview", context_id, BMP)).status_code == 404


def test_a_converter_that_runs_too_long_is_killed_with_its_whole_process_group(
    tmp_path: Path, settings: Any
) -> None:
    marker = tmp_path / "child.pid"
    fake = tmp_path / "soffice"
    # A "LibreOffice" that starts a child, as soffice starts soffice.bin, then hangs.
    fake.write_text(f"#!/bin/sh\nsleep 300 &\necho $! > {marker}\nwait\n")
    fake.chmod(0o755)
    settings.LIBREOFFICE_PATH = str(fake)
    settings.CONVERSION_TIMEOUT_SECONDS = 1
    started = time.monotonic()

    with pytest.raises(ConversionFailed, match="took longer than 1 seconds and was stopped"):
        previews.office_to_pdf(b"{\\rtf1 hello}", suffix=".rtf")

    assert time.monotonic() - started < 10
    assert not running(int(marker.read_text()))  # the converter's child went with it


def test_a_word_document_that_is_not_what_it_claims_never_reaches_libreoffice() -> None:
    with pytest.raises(ConversionFailed, match="not a Word document"):
        previews.convert(os.urandom(4096), kind="pdf", content_type=previews.WORD)
    leftover = subprocess.run(
        ["pgrep", "-f", "soffice.bin.*convert-"], capture_output=True, text=True, check=False
    )
    assert leftover.stdout == ""


@contextmanager
def web_server() -> Iterator[tuple[int, list[str]]]:
    """A web server on 127.0.0.1 that records every path asked of it; yield its port and those."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def zipped(files: dict[str, str], first: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in sorted(files.items(), key=lambda item: item[0] != first):
            archive.writestr(name, text)
    return buffer.getvalue()


def docx_with_linked_image(image_url: str) -> bytes:
    """A Word document whose picture is not in the file but linked from `image_url`."""
    main = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    rels = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    drawing = "http://schemas.openxmlformats.org/drawingml/2006"
    picture = f"{drawing}/picture"
    body = (
        f'<w:document xmlns:w="{main}" xmlns:r="{rels}" '
        f'xmlns:wp="{drawing}/wordprocessingDrawing" xmlns:a="{drawing}/main" '
        f'xmlns:pic="{picture}"><w:body><w:p><w:r><w:t>Linked picture letter</w:t></w:r></w:p>'
        '<w:p><w:r><w:drawing><wp:inline><wp:extent cx="914400" cy="914400"/>'
        '<wp:docPr id="1" name="p"/><a:graphic>'
        f'<a:graphicData uri="{picture}"><pic:pic><pic:nvPicPr><pic:cNvPr id="1" name="p"/>'
        '<pic:cNvPicPr/></pic:nvPicPr><pic:blipFill><a:blip r:link="rIdPicture"/>'
        '</pic:blipFill><pic:spPr><a:xfrm><a:off x="0" y="0"/><a:ext cx="914400" cy="914400"/>'
        '</a:xfrm><a:prstGeom prst="rect"/></pic:spPr></pic:pic></a:graphicData></a:graphic>'
        "</wp:inline></w:drawing></w:r></w:p></w:body></w:document>"
    )
    package = "http://schemas.openxmlformats.org/package/2006"
    return zipped(
        {
            "[Content_Types].xml": (
                f'<Types xmlns="{package}/content-types"><Default Extension="rels" '
                'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
                '<Default Extension="xml" ContentType="application/xml"/>'
                '<Override PartName="/word/document.xml" ContentType="application/'
                'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>'
            ),
            "_rels/.rels": (
                f'<Relationships xmlns="{package}/relationships"><Relationship Id="rId1" '
                f'Type="{rels}/officeDocument" Target="word/document.xml"/></Relationships>'
            ),
            "word/document.xml": body,
            "word/_rels/document.xml.rels": (
                f'<Relationships xmlns="{package}/relationships"><Relationship '
                f'Id="rIdPicture" Type="{rels}/image" Target="{image_url}" '
                'TargetMode="External"/></Relationships>'
            ),
        }
    )


def odt_with_linked_image(image_url: str) -> bytes:
    """An OpenDocument text whose picture is linked from `image_url`, not in the file."""
    office = "urn:oasis:names:tc:opendocument:xmlns"
    content = (
        f'<office:document-content xmlns:office="{office}:office:1.0" '
        f'xmlns:text="{office}:text:1.0" xmlns:draw="{office}:drawing:1.0" '
        f'xmlns:svg="{office}:svg-compatible:1.0" xmlns:xlink="http://www.w3.org/1999/xlink" '
        'office:version="1.2"><office:body><office:text>'
        "<text:p>Linked picture letter</text:p><text:p>"
        '<draw:frame draw:name="picture" svg:width="2cm" svg:height="2cm">'
        f'<draw:image xlink:href="{image_url}" xlink:type="simple" xlink:show="embed" '
        'xlink:actuate="onLoad"/></draw:frame></text:p></office:text></office:body>'
        "</office:document-content>"
    )
    manifest = (
        f'<manifest:manifest xmlns:manifest="{office}:manifest:1.0" manifest:version="1.2">'
        '<manifest:file-entry manifest:full-path="/" '
        'manifest:media-type="application/vnd.oasis.opendocument.text"/>'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
        "</manifest:manifest>"
    )
    return zipped(
        {
            "mimetype": "application/vnd.oasis.opendocument.text",
            "content.xml": content,
            "META-INF/manifest.xml": manifest,
        },
        first="mimetype",
    )


@pytest.mark.parametrize("isolated", [True, False], ids=["no network", "kernel refuses"])
@pytest.mark.parametrize(
    ("build", "content_type"),
    [(docx_with_linked_image, previews.WORD), (odt_with_linked_image, previews.ODT)],
    ids=["docx", "odt"],
)
def test_a_letter_with_a_linked_picture_converts_without_the_server_fetching_it(
    monkeypatch: pytest.MonkeyPatch,
    build: Any,
    content_type: str,
    isolated: bool,
) -> None:
    if not isolated:  # where there are no namespaces, the profile alone must block the link
        monkeypatch.setattr(previews, "network_isolation", lambda: [])
    with web_server() as (port, asked):
        document = build(f"http://127.0.0.1:{port}/tracking-pixel.png")

        pdf = previews.word_processor_pdf(document, content_type=content_type)

    assert "Linked picture letter" in pdf_text(pdf)[0]
    assert asked == []


def test_libreoffice_runs_with_no_network_limited_memory_and_its_own_deadline(
    tmp_path: Path, settings: Any
) -> None:
    seen = tmp_path / "seen.txt"
    fake = tmp_path / "soffice"
    fake.write_text(
        "#!/bin/sh\n"
        f"{{ ulimit -v; ulimit -f; tail -n +3 /proc/net/dev | cut -d: -f1; "
        f"ps -o comm= -p $PPID; }} > {seen}\nexit 1\n"
    )
    fake.chmod(0o755)
    settings.LIBREOFFICE_PATH = str(fake)

    with pytest.raises(ConversionFailed):
        previews.office_to_pdf(b"{\\rtf1 hello}", suffix=".rtf")

    memory, file_size, *interfaces, parent = seen.read_text().split()
    assert int(memory) * 1024 == previews.LIBREOFFICE_MEMORY_BYTES
    assert int(file_size) * 512 == previews.LIBREOFFICE_FILE_BYTES  # blocks of 512 bytes
    assert interfaces == ["lo"]  # a network of its own, with nothing on it
    assert parent == "timeout"


def test_libreoffice_does_not_outlive_a_worker_that_is_killed(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    fake = tmp_path / "soffice"
    fake.write_text(f"#!/bin/sh\nsleep 300 &\necho $! > {marker}\nwait\n")
    fake.chmod(0o755)
    worker_process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from viewer.services import previews; "
            "previews.office_to_pdf(b'{\\\\rtf1 hello}', suffix='.rtf')",
        ],
        env={**os.environ, "LIBREOFFICE_PATH": str(fake), "CONVERSION_TIMEOUT_SECONDS": "300"},
    )
    try:
        deadline = time.monotonic() + 30
        while not (marker.exists() and marker.read_text().strip()):
            assert time.monotonic() < deadline, "the converter never started"
            time.sleep(0.05)
        child = int(marker.read_text())

        worker_process.kill()  # as the hard time limit or the OOM killer does
        worker_process.wait()

        deadline = time.monotonic() + 10
        while running(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not running(child)
    finally:
        worker_process.kill()
        worker_process.wait()


# Printing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document_id", "pages"),
    [(PDF, 4), (TIFF, 3), (BMP, 1), (DOCX, 1), (HTML, None), (TEXT, 1)],
)
def test_the_print_pdf_has_the_documents_pages_each_carrying_the_provenance(
    gp: RecordingSandbox,
    clinician_client: Client,
    worker: None,
    document_id: str,
    pages: int | None,
) -> None:
    context_id = context_id_of(list_documents(clinician_client))

    page_url = clinician_client.post(url("document_print", context_id, document_id))["Location"]
    job = wait_for_print()
    status = clinician_client.get(f"{page_url}status", HTTP_HX_REQUEST="true")
    pdf = body_of(
        clinician_client.get(
            reverse("viewer:print_pdf", kwargs={"context_id": context_id, "token": job.token})
        )
    )

    assert job.state == ConversionState.READY, job.failure
    assert status.status_code == 286 and 'data-pdf-preview="print"' in status.content.decode()
    texts = pdf_text(pdf)
    if pages is not None:
        assert len(texts) == pages
    if document_id == PDF:
        original = (gp.sandbox.data_dir / sandbox_document(gp, PDF).file).read_bytes()
        assert len(texts) == len(PdfReader(io.BytesIO(original)).pages)
    title = sandbox_document(gp, document_id).title
    for number, text in enumerate(texts, start=1):
        assert "WHITAKER, Margaret Ann (Mrs) · NHS No. 999 000 0018 · Born 14-Mar-1948" in text
        assert "Source practice Riverside Medical Practice (A20047)" in text
        assert title[:40] in text and "Document date" in text
        assert "Printed by Dr Alex Clinician (clinician), Clinician, at " in text
        assert f"Page {number} of {len(texts)}" in text and NOTICE in text
    event = AuditEvent.objects.get(action="print", document_id=document_id)
    assert event.outcome == "success" and event.username == "clinician"


def test_a_pdf_that_fails_to_parse_is_not_printed_and_the_page_says_why(
    gp: RecordingSandbox, clinician_client: Client, worker: None
) -> None:
    context_id = context_id_of(list_documents(clinician_client))
    broken = b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 9 0 R >>\nendobj\ntrailer\n%%EOF"
    with served_instead(gp, PDF, broken):
        page_url = clinician_client.post(url("document_print", context_id, PDF))["Location"]
        job = wait_for_print(timeout=30)
    html = clinician_client.get(page_url).content.decode()

    assert job.state == ConversionState.FAILED and not job.blob_name
    assert "The document could not be printed" in html
    assert "This PDF could not be read: the file may be damaged" in html
    event = AuditEvent.objects.get(action="print", document_id=PDF)
    assert event.outcome == "failure" and "could not be read" in event.detail
    # The worker is free: the next print goes through.
    clinician_client.post(url("document_print", context_id, DERMATOLOGY_LETTER))
    assert wait_for_print(timeout=30).state == ConversionState.READY


def test_a_failed_print_has_no_print_button_but_says_why_with_a_way_back_to_the_document(
    gp: RecordingSandbox, clinician_client: Client
) -> None:
    context_id = context_id_of(list_documents(clinician_client))
    page_url = clinician_client.post(url("document_print", context_id, DERMATOLOGY_LETTER))[
        "Location"
    ]
    pending = clinician_client.get(f"{page_url}status", HTTP_HX_REQUEST="true").content.decode()
    PrintJob.objects.update(state=ConversionState.FAILED, failure="The practice did not answer.")

    html = clinician_client.get(page_url).content.decode()
    poll = clinician_client.get(f"{page_url}status", HTTP_HX_REQUEST="true").content.decode()

    # While it is prepared, what it says is for the page's one live region to read out.
    assert 'data-announce="Preparing the document for printing…"' in pending
    assert 'role="status"' not in pending and "data-print-now" not in pending
    assert html.count('role="status"') == 1 and "data-live-status" in html
    for failed in (html, poll):
        assert "data-print-now" not in failed  # no Print button that can never be pressed
        assert "The practice did not answer." in failed
        assert 'data-announce="The document could not be printed: The practice did not' in failed
        assert (
            url("document", context_id, DERMATOLOGY_LETTER)
            in failed.split("viewer-print__failed")[1]
        )


def test_batch_print_merges_three_letters_behind_a_cover_sheet_that_also_lists_the_one_it_could_not_print(
    gp: RecordingSandbox, clinician_client: Client, worker: None
) -> None:
    patient_url = list_documents(clinician_client)
    context_id = context_id_of(patient_url)
    # Three letters ("Inpatient final discharge letter", "Letter"s) and a device export.
    chosen = [PDF, PHYSIO_LETTER, DVLA_LETTER, OCTET_STREAM]
    keys = [url("document", context_id, d).rstrip("/").rsplit("/", 1)[1] for d in chosen]
    html = clinician_client.get(f"{patient_url}?keyword=letter").content.decode()
    assert all(f'value="{key}" form="batch-print" data-letter>' in html for key in keys[:3])
    assert "Select all letters" in html and "Print selected" in html

    response = clinician_client.post(
        reverse("viewer:batch_print", kwargs={"context_id": context_id}), {"document": keys}
    )
    progress = clinician_client.get(response["Location"]).content.decode()
    job = wait_for_print()
    ready = clinician_client.get(response["Location"]).content.decode()
    pdf = body_of(
        clinician_client.get(
            reverse("viewer:print_pdf", kwargs={"context_id": context_id, "token": job.token})
        )
    )

    assert response.status_code == 302 and "Print 4 documents" in progress
    assert job.state == ConversionState.READY
    texts = pdf_text(pdf)
    word_pages = job.results[2]["pages"]
    assert word_pages >= 1
    assert len(texts) == 1 + 4 + 2 + word_pages == job.pages  # the cover, then the letters
    assert "Inpatient discharge summary" in texts[1] and "Page 1 of 4" in texts[1]
    cover = texts[0]
    assert (
        "Batch print: cover sheet" in cover
        and "4 documents asked for; 3 printed, 1 not printed" in cover
    )
    for document_id in chosen:
        assert sandbox_document(gp, document_id).title in cover
    assert "Not included: This format cannot be printed (application/octet-stream)" in cover
    assert all(NOTICE in text and "NHS No. 999 000 0018" in text for text in texts)
    assert "Not included" in ready and "Spirometry device export" in ready
    events = {e.document_id: e for e in AuditEvent.objects.filter(action="batch_print")}
    assert sorted(events) == sorted(chosen)
    assert [events[d].outcome for d in chosen] == ["success", "success", "success", "failure"]
    assert all(str(job.token) in e.detail for e in events.values())


def test_a_receptionists_batch_of_letters_is_printed_and_audited_as_theirs(
    gp: RecordingSandbox, receptionist: Any, worker: None
) -> None:
    client = Client()
    client.force_login(receptionist)
    context_id = context_id_of(list_documents(client))
    chosen = [PDF, PHYSIO_LETTER]
    keys = [url("document", context_id, d).rstrip("/").rsplit("/", 1)[1] for d in chosen]

    response = client.post(
        reverse("viewer:batch_print", kwargs={"context_id": context_id}), {"document": keys}
    )
    job = wait_for_print()
    ready = client.get(response["Location"]).content.decode()
    pdf = body_of(
        client.get(
            reverse("viewer:print_pdf", kwargs={"context_id": context_id, "token": job.token})
        )
    )

    assert response.status_code == 302 and job.state == ConversionState.READY
    assert job.user == receptionist and not job.not_printed
    texts = pdf_text(pdf)
    assert len(texts) == job.pages == 1 + 4 + 2  # the cover, then both letters
    assert "2 documents asked for; 2 printed, 0 not printed" in texts[0]
    assert all("Receptionist" in text for text in texts)  # printed by, with their role
    assert f"Ready to print: {job.pages} pages" in ready and "Not included" not in ready
    events = AuditEvent.objects.filter(action="batch_print")
    assert sorted(e.document_id for e in events) == sorted(chosen)
    assert {(e.username, e.outcome) for e in events} == {("receptionist", "success")}


def test_a_receptionists_damaged_letter_is_listed_as_not_printed_without_download_advice(
    gp: RecordingSandbox, receptionist: Any, worker: None
) -> None:
    client = Client()
    client.force_login(receptionist)
    context_id = context_id_of(list_documents(client))
    keys = [
        url("document", context_id, d).rstrip("/").rsplit("/", 1)[1] for d in (PDF, PHYSIO_LETTER)
    ]

    with served_instead(gp, PHYSIO_LETTER, b"%PDF-1.4 this is not really a PDF"):
        response = client.post(
            reverse("viewer:batch_print", kwargs={"context_id": context_id}), {"document": keys}
        )
        job = wait_for_print()
    page = client.get(response["Location"]).content.decode()

    assert job.state == ConversionState.READY and len(job.not_printed) == 1
    reason = job.not_printed[0][1]["reason"]
    assert reason == "This PDF could not be read: the file may be damaged."
    assert reason in page and "ownload" not in reason


def test_batch_print_with_nothing_or_too_much_chosen_says_so_above_the_table_it_came_from(
    gp: RecordingSandbox, clinician_client: Client, settings: Any
) -> None:
    settings.BATCH_PRINT_MAX_DOCUMENTS = 2
    patient_url = list_documents(clinician_client)
    context_id = context_id_of(patient_url)
    keys = [url("document", context_id, d).rstrip("/").rsplit("/", 1)[1] for d in (PDF, TIFF, BMP)]
    batch = reverse("viewer:batch_print", kwargs={"context_id": context_id})
    table = clinician_client.get(f"{patient_url}?keyword=letter").content.decode()

    nothing = clinician_client.post(batch, {"query": "keyword=letter"})
    too_many = clinician_client.post(batch, {"query": "keyword=letter", "document": keys})

    assert 'name="query" value="keyword=letter"' in table
    assert "Select all letters on this page" in table
    assert (
        'data-batch-print-submit data-module="nhsuk-button" data-prevent-double-click="true"'
        in table
    )
    for response, message in (
        (nothing, "Select at least one document to print."),
        (too_many, "Select at most 2 documents to print together."),
    ):
        assert response.status_code == 302
        location = response["Location"]
        assert location.startswith(f"{patient_url}?keyword=letter&print_error=")
        html = clinician_client.get(location).content.decode()
        summary = html.split('class="nhsuk-error-summary"')[1]
        assert message in summary.split("</div>")[0]
        assert html.index("nhsuk-error-summary") < html.index("viewer-documents__table")
        assert "(filtered: " in html  # the table as it was
    assert not PrintJob.objects.exists()


def test_a_receptionist_cannot_batch_print_a_document_that_is_not_a_letter(
    gp: RecordingSandbox, receptionist: Any
) -> None:
    client = Client()
    client.force_login(receptionist)
    context_id = context_id_of(list_documents(client))
    key = url("document", context_id, TIFF).rstrip("/").rsplit("/", 1)[1]  # a scan, no letter
    response = client.post(
        reverse("viewer:batch_print", kwargs={"context_id": context_id}), {"document": [key]}
    )
    assert response.status_code == 404
    assert not PrintJob.objects.exists()
    assert AuditEvent.objects.filter(action="access_denied", document_id=key).exists()


def test_the_html_print_says_how_many_pages_it_has_and_every_page_agrees(
    gp: RecordingSandbox, clinician_client: Client, worker: None
) -> None:
    context_id = context_id_of(list_documents(clinician_client))
    page_url = clinician_client.post(url("document_print", context_id, HTML))["Location"]
    job = wait_for_print()
    ready = clinician_client.get(page_url).content.decode()
    pdf = body_of(
        clinician_client.get(
            reverse("viewer:print_pdf", kwargs={"context_id": context_id, "token": job.token})
        )
    )

    texts = pdf_text(pdf)
    assert job.state == ConversionState.READY and job.pages == len(texts) >= 1
    assert f"Ready to print: {job.pages} page" in ready
    for number, text in enumerate(texts, start=1):
        assert f"Page {number} of {job.pages}" in text
    assert "Electronic discharge summary" in " ".join(texts)
    assert "SCRIPT EXECUTED" not in " ".join(texts)


def test_another_users_print_is_a_404(
    gp: RecordingSandbox, clinician_client: Client, worker: None
) -> None:
    context_id = context_id_of(list_documents(clinician_client))
    page_url = clinician_client.post(url("document_print", context_id, DERMATOLOGY_LETTER))[
        "Location"
    ]
    wait_for_print()
    other = Client()
    other.force_login(make_user("another-clinician", "Clinician"))
    assert other.get(page_url).status_code == 404
    assert other.get(f"{page_url}pdf").status_code == 404


# Lost and overlong work --------------------------------------------------------------------


def a_print_job(user: Any, entries: int = 1, **fields: Any) -> PrintJob:
    """A print job of `entries` letters, as print_start would make it, without its task."""
    from django.utils import timezone

    now = timezone.now()
    entry = {
        "key": "k",
        "document_id": "doc",
        "url": "https://example.invalid/doc",
        "content_type": "text/plain",
        "title": "A letter",
        "created": "1-Jan-2025",
        "practice": "A12345",
        "format": "Text",
        "unavailable": "",
    }
    job = PrintJob.objects.create(
        user=user,
        session_key="session",
        context_id="context",
        nhs_number="9990000018",
        practice_ods="A12345",
        service_root="https://example.invalid",
        asid="1",
        batch=entries > 1,
        provenance={"patient": "Patient · NHS No. 999 000 0018", "printed": "Printed by test"},
        documents=[{**entry, "document_id": f"doc-{n}"} for n in range(entries)],
        expires_at=now + timezone.timedelta(minutes=15),
        **fields,
    )
    return job


def test_a_print_that_waited_long_in_the_queue_is_not_failed_by_the_sweep_while_it_runs(
    monkeypatch: pytest.MonkeyPatch, blobs: Path
) -> None:
    from django.utils import timezone

    from viewer.services import printing

    long_ago = timezone.now() - timezone.timedelta(minutes=9)
    job = a_print_job(make_user("queued-printer", "Receptionist"), created_at=long_ago)
    PrintJob.objects.filter(pk=job.pk).update(updated_at=long_ago)
    monkeypatch.setattr(printing, "session_alive", lambda key: True)

    def beat_runs_while_printing(job: PrintJob, entry: dict[str, Any]) -> tuple[bytes, int, str]:
        printing.purge_stale()  # the sweep comes round just after the worker claimed it
        return printing.text_pdf("Dear Doctor"), 1, "trace"

    monkeypatch.setattr(printing, "_print_one", beat_runs_while_printing)

    assert printing.run_print_job(job.pk) == "ready"
    job.refresh_from_db()
    assert job.state == ConversionState.READY and job.failure == ""


def test_a_preview_that_waited_long_in_the_queue_is_not_failed_by_the_sweep_while_it_runs(
    monkeypatch: pytest.MonkeyPatch, blobs: Path
) -> None:
    from django.utils import timezone

    long_ago = timezone.now() - timezone.timedelta(minutes=9)
    row = ConvertedDocument.objects.create(
        user=make_user("queued-viewer", "Clinician"),
        session_key="session",
        context_id="context",
        document_key="key",
        document_id="doc",
        nhs_number="9990000018",
        practice_ods="A12345",
        service_root="https://example.invalid",
        asid="1",
        url="https://example.invalid/doc",
        content_type="application/xml",
        kind="text",
        expires_at=timezone.now() + timezone.timedelta(minutes=15),
        created_at=long_ago,
    )
    ConvertedDocument.objects.filter(pk=row.pk).update(updated_at=long_ago)
    monkeypatch.setattr(previews, "session_alive", lambda key: True)

    def beat_runs_while_fetching(**kwargs: Any) -> tuple[bytes, str]:
        previews.purge_stale()
        return b"<report/>", "trace"

    monkeypatch.setattr(previews, "fetch_document", beat_runs_while_fetching)

    assert previews.run_conversion(row.pk) == "ready"


def test_work_no_worker_started_or_that_a_lost_worker_left_running_fails_and_is_audited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django.utils import timezone

    from viewer.services import printing

    monkeypatch.setattr(printing, "session_alive", lambda key: True)
    user = make_user("lost-printer", "Receptionist")
    never_started = a_print_job(user, entries=2)
    lost = a_print_job(user, entries=3, state=ConversionState.CONVERTING, done=1)
    recent = a_print_job(user)
    PrintJob.objects.filter(pk=never_started.pk).update(
        updated_at=timezone.now() - timezone.timedelta(minutes=11)
    )
    PrintJob.objects.filter(pk=lost.pk).update(
        updated_at=timezone.now() - timezone.timedelta(hours=1)
    )

    printing.purge_stale()

    for job in (never_started, lost, recent):
        job.refresh_from_db()
    assert never_started.state == ConversionState.FAILED
    assert "never started" in never_started.failure and "Try again" in never_started.failure
    assert lost.state == ConversionState.FAILED and "stopped part way" in lost.failure
    assert recent.state == ConversionState.QUEUED
    failures = AuditEvent.objects.filter(action="batch_print", outcome="failure")
    # Every document not printed is in the audit trail: both of one, the last two of the other.
    assert sorted(failures.values_list("document_id", flat=True)) == [
        "doc-0",
        "doc-1",
        "doc-1",
        "doc-2",
    ]


def test_a_batch_that_runs_out_of_task_time_fails_saying_so_and_every_document_is_audited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from celery.exceptions import SoftTimeLimitExceeded

    from viewer.services import printing

    job = a_print_job(make_user("slow-printer", "Receptionist"), entries=3)
    calls: list[str] = []

    def slow(job: PrintJob, entry: dict[str, Any]) -> tuple[bytes, int, str]:
        calls.append(entry["document_id"])
        if len(calls) == 2:
            raise SoftTimeLimitExceeded  # Celery's soft limit strikes mid-document
        return printing.text_pdf("Dear Doctor"), 1, "trace"

    monkeypatch.setattr(printing, "_print_one", slow)

    with pytest.raises(SoftTimeLimitExceeded):
        printing.run_print_job(job.pk)

    job.refresh_from_db()
    assert job.state == ConversionState.FAILED and "took too long" in job.failure
    audited = AuditEvent.objects.filter(action="batch_print")
    assert list(audited.order_by("pk").values_list("document_id", "outcome")) == [
        ("doc-0", "success"),
        ("doc-1", "failure"),
        ("doc-2", "failure"),
    ]


def test_a_batch_leaves_out_what_would_pass_its_page_cap_or_time_budget_and_says_why(
    monkeypatch: pytest.MonkeyPatch, settings: Any, blobs: Path
) -> None:
    from viewer.services import printing

    settings.BATCH_PRINT_MAX_PAGES = 3
    job = a_print_job(make_user("busy-printer", "Receptionist"), entries=4)
    monkeypatch.setattr(printing, "print_time_budget", lambda: 0.5)
    pages = {"doc-0": 2, "doc-1": 2, "doc-2": 1, "doc-3": 1}

    def letter(job: PrintJob, entry: dict[str, Any]) -> tuple[bytes, int, str]:
        if entry["document_id"] == "doc-2":
            time.sleep(0.6)  # a slow one uses up the rest of the budget
        return printing.text_pdf("Dear Doctor"), pages[entry["document_id"]], "trace"

    monkeypatch.setattr(printing, "_print_one", letter)

    assert printing.run_print_job(job.pk) == "ready"
    job.refresh_from_db()
    reasons = [result["reason"] for result in job.results]
    assert reasons[0] == "" and reasons[2] == ""
    assert "past 3 pages" in reasons[1]
    assert reasons[3] == printing.OUT_OF_TIME


# Purging ----------------------------------------------------------------------------------


def _make_preview_and_print(client: Client) -> None:
    context_id = context_id_of(list_documents(client))
    preview(client, context_id, BMP)
    client.post(url("document_print", context_id, DERMATOLOGY_LETTER))
    assert wait_for_conversion(BMP).state == ConversionState.READY
    assert wait_for_print().state == ConversionState.READY


def stored_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


def test_signing_out_purges_the_sessions_previews_and_prints(
    gp: RecordingSandbox, clinician_client: Client, worker: None, blobs: Path
) -> None:
    _make_preview_and_print(clinician_client)
    assert stored_files(blobs)

    clinician_client.post(reverse("logout"))

    assert not ConvertedDocument.objects.exists() and not PrintJob.objects.exists()
    assert stored_files(blobs) == []


def test_previews_and_prints_of_a_session_that_ended_without_signing_out_are_purged(
    gp: RecordingSandbox, clinician_client: Client, worker: None, blobs: Path
) -> None:
    from importlib import import_module

    from django.conf import settings

    _make_preview_and_print(clinician_client)
    other = Client()
    other.force_login(make_user("another-clinician", "Clinician"))
    preview(other, context_id_of(list_documents(other)), BMP)
    deadline = time.monotonic() + 60
    while (kept := ConvertedDocument.objects.get(user__username="another-clinician")).pending:
        assert time.monotonic() < deadline, "the other session's preview never finished"
        time.sleep(0.1)
    # The session ends (it expired, or was cleared) while its previews have time to run.
    key = clinician_client.session.session_key
    import_module(settings.SESSION_ENGINE).SessionStore(key).delete(key)

    assert purge_converted_documents.delay().get(timeout=30) == 2

    assert list(ConvertedDocument.objects.all()) == [kept] and not PrintJob.objects.exists()
    assert sorted(path.name for path in stored_files(blobs)) == sorted(
        Path(name).name for name in kept.blob_names
    )  # only the other session's pages are left


def test_expired_previews_and_prints_are_purged_by_the_beat_task(
    gp: RecordingSandbox, clinician_client: Client, worker: None, blobs: Path
) -> None:
    from django.utils import timezone

    _make_preview_and_print(clinician_client)
    past = timezone.now() - timezone.timedelta(seconds=1)
    ConvertedDocument.objects.update(expires_at=past)
    PrintJob.objects.update(expires_at=past)

    assert purge_converted_documents.delay().get(timeout=30) == 2
    assert stored_files(blobs) == []


def test_a_large_scan_goes_into_the_print_pdf_at_no_more_than_300_dpi_of_the_page() -> None:
    from PIL import Image

    from viewer.services.printing import A4, MARGIN, image_pdf

    scan = io.BytesIO()
    Image.new("L", (6000, 8000), 200).save(scan, "PNG")  # 48 MP: an A4 page at about 730 dpi
    small = io.BytesIO()
    Image.new("RGB", (800, 600), "white").save(small, "PNG")

    reader = PdfReader(io.BytesIO(image_pdf([scan.getvalue(), small.getvalue()])))

    big = reader.pages[0].images[0].image
    assert big is not None
    most = ((A4[0] - 2 * MARGIN) / 72 * 300, (A4[1] - 2 * MARGIN) / 72 * 300)
    assert big.width <= most[0] + 1 and big.height <= most[1] + 1
    assert big.width >= most[0] * 0.95 or big.height >= most[1] * 0.95  # not smaller than that
    assert big.width / big.height == pytest.approx(6000 / 8000, rel=0.01)
    # A page already at print resolution or less goes in as it is.
    assert reader.pages[1].images[0].image.size == (800, 600)  # type: ignore[union-attr]
