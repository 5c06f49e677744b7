"""Printing: a PDF made on the server, with the document's provenance on every page.

**Print** on a document page and **batch print** from the documents table both make a
`PrintJob` and queue `viewer.tasks.build_print`. Its body, `run_print_job`, fetches each
document as the user who asked, turns it into PDF pages (a PDF as it is; images page by
page; word processor documents and sanitised HTML through LibreOffice; text and XML set
in type), and stamps every page with a header and a footer: the patient, the document,
who printed it and when, and that it came from the GP record through GP Connect. Each
page's content is scaled down a little so the provenance never covers it. A batch starts
with a cover sheet listing every document asked for, with the reason for any that could
not be printed. The PDF is stored encrypted and purged like a prefetched document; every
document printed (or not) is audited.
"""

from __future__ import annotations

import io
import logging
import secrets
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.sessions.backends.base import SessionBase
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone
from fpdf import FPDF
from PIL import Image
from pypdf import PdfReader, PdfWriter, Transformation
from pypdf.errors import PyPdfError

from gpconnect import DocumentSummary
from viewer import audit, encrypted_blobs, roles
from viewer.context import PatientContext
from viewer.models import ConversionState, PrintJob
from viewer.presenters import PatientBanner, as_date, file_size, format_label, short_date
from viewer.services import (
    PLACEHOLDER_MESSAGE,
    UserLike,
    _document_in,
    _document_of,
    _user_id,
    base_content_type,
    cache_ttl,
    document_key,
    max_document_bytes,
    patient_context_get,
    session_alive,
)
from viewer.services.previews import (
    CONVERSIONS,
    DOWNLOAD_ADVICE,
    QUEUE_PATIENCE,
    ConversionFailed,
    conversion_time_limit,
    document_text,
    fetch_document,
    image_pages,
    office_to_pdf,
    sanitised_html,
    stuck_before,
    without_download_advice,
    word_processor_pdf,
)

logger = logging.getLogger(__name__)
# fpdf2 subsets fonts with fontTools, which logs every table at INFO: noise, not news.
logging.getLogger("fontTools").setLevel(logging.WARNING)

PROVENANCE_NOTICE = "Retrieved from the GP record via GP Connect; it may not be the latest version."

# The bands (in points) kept clear at the top and bottom of every page for the provenance.
HEADER_BAND = 34.0
FOOTER_BAND = 30.0
MARGIN = 24.0
FONT_SIZE = 7.0
A4 = (595.28, 841.89)

_IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/tiff", "image/bmp"}
_IMAGE_TYPES |= {t for t, kind in CONVERSIONS.items() if kind == "pages"}
_TEXT_TYPES = {"text/plain", "application/xml", "text/xml"}
# A text document longer than this is not set in type (about 200 pages).
MAX_TEXT_CHARACTERS = 500_000
# Images go into the print PDF at no more than this many dots per inch of the space they
# fill on the page: paper shows no more, and a scan at full size would swell the PDF (and
# the memory of the worker that builds, stamps and merges it) many times over.
PRINT_DPI = 300


def print_kind(content_type: str) -> str:
    """Return how a format is printed ("pdf", "images", "office", "html", "text"), or ""."""
    base = base_content_type(content_type)
    if base == "application/pdf":
        return "pdf"
    if base in _IMAGE_TYPES:
        return "images"
    if CONVERSIONS.get(base) == "pdf":
        return "office"
    if base == "text/html":
        return "html"
    if base in _TEXT_TYPES:
        return "text"
    return ""


def cannot_print_reason(content_type: str) -> str:
    return f"This format cannot be printed ({format_label(content_type)}). {DOWNLOAD_ADVICE}"


# Making PDF pages ---------------------------------------------------------------------------


def _new_pdf() -> FPDF:
    pdf = FPDF(unit="pt", format=A4)
    pdf.set_auto_page_break(False)
    pdf.set_margins(MARGIN, MARGIN)
    pdf.add_font("print", "", str(settings.PRINT_FONT_PATH))
    pdf.set_font("print", size=FONT_SIZE)
    return pdf


def _output(pdf: FPDF) -> bytes:
    return bytes(pdf.output())


def read_pdf(data: bytes) -> PdfReader:
    """Return a reader over a PDF's pages, or raise ConversionFailed if it cannot be used."""
    max_pages = int(settings.PREVIEW_MAX_PAGES)
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise ConversionFailed(
                "This PDF is protected with a password, so it cannot be printed."
            )
        count = len(reader.pages)
    except ConversionFailed:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
        raise ConversionFailed(
            f"This PDF could not be read: the file may be damaged. {DOWNLOAD_ADVICE}"
        ) from error
    except RecursionError as error:
        raise ConversionFailed("This PDF is built in a way that cannot be read safely.") from error
    if count == 0:
        raise ConversionFailed("This PDF has no pages.")
    if count > max_pages:
        raise ConversionFailed(f"This PDF has {count} pages, more than {max_pages} print here.")
    return reader


def text_pdf(text: str) -> bytes:
    """Return the text set on A4 pages (long lines wrap; tabs become spaces)."""
    if len(text) > MAX_TEXT_CHARACTERS:
        raise ConversionFailed("This text document is too long to print here.")
    text = text.replace("\r\n", "\n").replace("\r", "\n").expandtabs(4)
    text = "".join(ch for ch in text if ch == "\n" or ch.isprintable())
    pdf = _new_pdf()
    pdf.set_auto_page_break(True, margin=MARGIN)
    pdf.set_font("print", size=10)
    pdf.add_page()
    with warnings.catch_warnings():
        # A character the font lacks prints as a blank; fpdf2 warns about each one.
        warnings.simplefilter("ignore", UserWarning)
        pdf.multi_cell(0, 13, text or " ")
    if pdf.page > int(settings.PREVIEW_MAX_PAGES):
        raise ConversionFailed("This text document is too long to print here.")
    return _output(pdf)


def document_pdf(data: bytes, content_type: str) -> bytes:
    """Return the document as a PDF (without provenance), or raise ConversionFailed."""
    base = base_content_type(content_type)
    kind = print_kind(base)
    if kind == "pdf":
        read_pdf(data)
        return data
    if kind == "images":
        return image_pdf(image_pages(data, first_only=base == "image/gif"))
    if kind == "office":
        return word_processor_pdf(data, content_type=base)
    if kind == "html":
        return office_to_pdf(sanitised_html(data), suffix=".html")
    if kind == "text":
        return text_pdf(document_text(data))
    raise ConversionFailed(cannot_print_reason(base))


def _at_print_resolution(png: bytes, width: float, height: float) -> bytes:
    """Return the PNG page downsampled to PRINT_DPI at `width` × `height` points (or as it
    is, when it has no more pixels than that)."""
    limit = (max(1, round(width / 72 * PRINT_DPI)), max(1, round(height / 72 * PRINT_DPI)))
    with Image.open(io.BytesIO(png)) as image:
        if image.width <= limit[0] and image.height <= limit[1]:
            return png
        frame = image.convert("L") if image.mode in ("1", "P") else image
        frame.thumbnail(limit, Image.Resampling.LANCZOS)
        out = io.BytesIO()
        frame.save(out, "PNG")
    return out.getvalue()


def image_pdf(pages: Sequence[bytes]) -> bytes:
    """Return a PDF with each PNG page fitted to its own A4 page (landscape when wide),
    downsampled to PRINT_DPI at the size it is printed."""
    pdf = _new_pdf()
    for png in pages:
        with Image.open(io.BytesIO(png)) as image:
            width, height = image.size
        landscape = width > height
        page_w, page_h = (A4[1], A4[0]) if landscape else A4
        pdf.add_page(format=(page_w, page_h))
        scale = min((page_w - 2 * MARGIN) / width, (page_h - 2 * MARGIN) / height)
        w, h = width * scale, height * scale
        printed = _at_print_resolution(png, w, h)
        pdf.image(io.BytesIO(printed), x=(page_w - w) / 2, y=(page_h - h) / 2, w=w, h=h)
    return _output(pdf)


# Stamping the provenance ------------------------------------------------------------------


@dataclass(frozen=True)
class Provenance:
    """What every printed page says about where it came from and who printed it."""

    patient: str  # name · NHS No. · Born
    document: str  # title · document date
    practice: str  # the source practice
    printed: str  # Printed by …, role, at …

    def header(self) -> list[str]:
        return [f"{self.patient} · Source practice {self.practice}", self.document]

    def footer(self, number: int, count: int) -> list[str]:
        return [f"{self.printed} · Page {number} of {count}", PROVENANCE_NOTICE]


def _fitted(pdf: FPDF, text: str, width: float) -> str:
    """Return the text, shortened with an ellipsis if it is wider than `width`."""
    if pdf.get_string_width(text) <= width:
        return text
    while text and pdf.get_string_width(text + "…") > width:
        text = text[:-1]
    return text.rstrip() + "…"


def _overlays(sizes: Sequence[tuple[float, float]], provenance: Provenance) -> PdfReader:
    """Return one page per size carrying only the provenance, for stamping onto the pages."""
    pdf = _new_pdf()
    count = len(sizes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # missing glyphs print as blanks
        for number, (width, height) in enumerate(sizes, start=1):
            pdf.add_page(format=(width, height))
            usable = width - 2 * MARGIN
            for row, line in enumerate(provenance.header()):
                pdf.set_xy(MARGIN, 8 + row * 10)
                pdf.cell(usable, 9, _fitted(pdf, line, usable))
            for row, line in enumerate(provenance.footer(number, count)):
                pdf.set_xy(MARGIN, height - FOOTER_BAND + 6 + row * 10)
                pdf.cell(usable, 9, _fitted(pdf, line, usable))
    return PdfReader(io.BytesIO(_output(pdf)))


def stamped(data: bytes, provenance: Provenance) -> tuple[bytes, int]:
    """Return the PDF with each page scaled into the space between the provenance bands,
    and its page count.

    Only the pages are copied: links, form fields, page actions and the document's own
    scripts or open actions are left behind; a print carries none of them.
    """
    reader = read_pdf(data)
    writer = PdfWriter()
    try:
        pages = [writer.add_page(page) for page in reader.pages]
        sizes: list[tuple[float, float]] = []
        for page in pages:
            for key in ("/Annots", "/AA"):
                if key in page:
                    del page[key]
            page.transfer_rotation_to_content()
            sizes.append((float(page.mediabox.width), float(page.mediabox.height)))
        overlays = _overlays(sizes, provenance)
        for page, overlay, (width, height) in zip(pages, overlays.pages, sizes, strict=True):
            left, bottom = float(page.mediabox.left), float(page.mediabox.bottom)
            scale = min(1.0, (height - HEADER_BAND - FOOTER_BAND) / height)
            page.add_transformation(
                Transformation()
                .translate(-left, -bottom)
                .scale(scale, scale)
                .translate(left + (width - width * scale) / 2, bottom + FOOTER_BAND)
            )
            page.merge_transformed_page(overlay, Transformation().translate(left, bottom))
        out = io.BytesIO()
        writer.write(out)
    except (PyPdfError, ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
        raise ConversionFailed(
            f"This PDF could not be read: the file may be damaged. {DOWNLOAD_ADVICE}"
        ) from error
    return out.getvalue(), len(pages)


def merged(parts: Sequence[bytes]) -> bytes:
    """Return one PDF of the parts' pages, in order."""
    writer = PdfWriter()
    for part in parts:
        writer.append(PdfReader(io.BytesIO(part)))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def cover_sheet(job: PrintJob, results: Sequence[dict[str, Any]]) -> bytes:
    """Return the batch's cover sheet: the patient, who printed, and each document's fate."""
    pdf = _new_pdf()
    pdf.set_auto_page_break(True, margin=MARGIN + FOOTER_BAND)
    pdf.set_margins(MARGIN + 12, MARGIN + HEADER_BAND, MARGIN + 12)
    pdf.add_page()
    width = pdf.epw
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pdf.set_font("print", size=16)
        pdf.multi_cell(width, 22, "Batch print: cover sheet", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("print", size=10)
        provenance = job.provenance
        for line in (
            provenance["patient"],
            provenance["printed"],
            f"{len(results)} documents asked for; "
            f"{sum(1 for r in results if r['status'] == 'printed')} printed, "
            f"{sum(1 for r in results if r['status'] != 'printed')} not printed.",
            PROVENANCE_NOTICE,
        ):
            pdf.multi_cell(width, 14, line, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(8)
        for number, result in enumerate(results, start=1):
            entry = job.documents[number - 1]
            pdf.set_font("print", size=10)
            title = f"{number}. {entry['title']}"
            pdf.multi_cell(width, 14, title, new_x="LMARGIN", new_y="NEXT")
            pdf.set_font("print", size=9)
            facts = f"Document date {entry['created'] or 'not known'} · {entry['format']}"
            if result["status"] == "printed":
                pages = result["pages"]
                outcome = f"Included: {pages} page{'s' if pages != 1 else ''}."
            else:
                outcome = f"Not included: {result['reason']}"
            pdf.multi_cell(width, 12, facts, new_x="LMARGIN", new_y="NEXT")
            pdf.multi_cell(width, 12, outcome, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(4)
    return _output(pdf)


# Asking for a print -------------------------------------------------------------------------


def _display_name(user: UserLike) -> str:
    """Return "Dr Alex Clinician (username)" from the profile, for the print's footer."""
    who = roles.requesting_user(user)
    name = " ".join([*who.prefixes, *who.given_names, who.family_name])
    return f"{name} ({user.get_username()})"


def _printed_line(user: UserLike, when: datetime) -> str:
    local = timezone.localtime(when)
    return (
        f"Printed by {_display_name(user)}, {roles.role_of(user) or ''}, at {local:%d-%b-%Y %H:%M}"
    )


def _entry(context: PatientContext, document: DocumentSummary) -> dict[str, Any]:
    """What the task needs to know of one document: the session is not available to it."""
    too_large = document.size is not None and document.size > max_document_bytes()
    unavailable = ""
    if document.url is None:
        reason = document.unavailable_reason
        unavailable = PLACEHOLDER_MESSAGE + (f" The practice says: “{reason}”." if reason else "")
    elif too_large:
        unavailable = (
            f"This document is {file_size(document.size)}, over the "
            f"{settings.GPCONNECT_MAX_DOCUMENT_MB} MB GP Connect limit, so it was not requested."
        )
    custodian = document.custodian or ""
    if document.custodian_ods:
        custodian = (
            f"{custodian} ({document.custodian_ods})" if custodian else document.custodian_ods
        )
    return {
        "key": document_key(context.id, document.id),
        "document_id": document.id[:500],
        "url": document.url or "",
        "content_type": base_content_type(document.content_type),
        "title": document.title
        or (document.type.display if document.type else "")
        or "Untitled document",
        "created": short_date(as_date(document.created)),
        "practice": custodian or context.practice_ods,
        "format": format_label(document.content_type),
        "unavailable": unavailable,
    }


def _create_job(
    *,
    user: UserLike,
    context: PatientContext,
    documents: Sequence[DocumentSummary],
    batch: bool,
    session: SessionBase,
) -> PrintJob:
    assert isinstance(user, User)
    now = timezone.now()
    banner = PatientBanner.of(context, today=timezone.localdate())
    job = PrintJob.objects.create(
        user=user,
        session_key=session.session_key or "",
        context_id=context.id,
        nhs_number=context.nhs_number,
        practice_ods=context.practice_ods,
        service_root=context.service_root,
        asid=context.asid,
        batch=batch,
        provenance={
            "patient": f"{banner.name} · NHS No. {banner.nhs_number} · Born {banner.born}",
            "printed": _printed_line(user, now),
        },
        documents=[_entry(context, d) for d in documents],
        expires_at=now + cache_ttl(),
    )
    transaction.on_commit(lambda: _enqueue(job.pk))
    return job


def _enqueue(job_id: int) -> None:
    from viewer import tasks  # tasks import services: import here, not at the top

    tasks.build_print.delay(job_id)


def _refuse(user: UserLike, context: PatientContext, document_id: str, action: str) -> None:
    audit.record(
        user=user,
        action=action,
        outcome="denied",
        nhs_number=context.nhs_number,
        context_id=context.id,
        document_id=document_id,
        detail="the user's role may not print documents",
    )
    raise PermissionDenied


def print_start(
    *, user: UserLike, context_id: str, document_id: str, session: SessionBase
) -> PrintJob:
    """Queue the print PDF of one document; return its job.

    Raises Http404 for a document outside this user's context, a placeholder, one over the
    size limit or a format that cannot be printed, and PermissionDenied for a role that
    may not print; each refusal is audited.
    """
    context, document = _document_of(
        user=user, context_id=context_id, document_id=document_id, session=session
    )
    if not roles.can(user, "print"):
        _refuse(user, context, document.id, "print")
    entry = _entry(context, document)
    reason = entry["unavailable"] or (
        "" if print_kind(document.content_type) else cannot_print_reason(document.content_type)
    )
    if reason:
        audit.record(
            user=user,
            action="print",
            outcome="denied",
            nhs_number=context.nhs_number,
            context_id=context.id,
            document_id=document.id,
            detail=f"not printable: {reason}",
        )
        raise Http404("This document cannot be printed")
    # One print per document and session while it is being made or ready: pressing Print
    # again, reloading or going back shows that one rather than making (and auditing) another.
    existing = PrintJob.objects.filter(
        user_id=_user_id(user),
        session_key=session.session_key or "",
        context_id=context.id,
        batch=False,
        documents__0__key=entry["key"],
        state__in=[ConversionState.QUEUED, ConversionState.CONVERTING, ConversionState.READY],
        expires_at__gt=timezone.now(),
    ).first()
    if existing is not None:
        return existing
    return _create_job(
        user=user, context=context, documents=[document], batch=False, session=session
    )


class BatchTooLarge(Exception):
    """More documents were chosen than one batch prints."""


def batch_print_start(
    *, user: UserLike, context_id: str, document_ids: Sequence[str], session: SessionBase
) -> PrintJob:
    """Queue one merged PDF of the chosen documents, with a cover sheet; return its job.

    `document_ids` are the opaque ids of the table's checkboxes. Any that is not in this
    user's patient context is a 404 (audited); a role that may not print is refused.
    Documents that cannot be printed are listed on the cover sheet with the reason.
    """
    context = patient_context_get(user=user, context_id=context_id, session=session)
    if not roles.can(user, "print"):
        _refuse(user, context, "", "batch_print")
    wanted = list(dict.fromkeys(document_ids))
    if len(wanted) > int(settings.BATCH_PRINT_MAX_DOCUMENTS):
        raise BatchTooLarge
    documents = [
        _document_in(user=user, context=context, document_id=key, session=session) for key in wanted
    ]
    return _create_job(user=user, context=context, documents=documents, batch=True, session=session)


def print_job_get(
    *, user: UserLike, context_id: str, token: uuid.UUID, session: SessionBase
) -> PrintJob:
    """Return this user's print job from this session, unexpired; otherwise 404."""
    context = patient_context_get(user=user, context_id=context_id, session=session)
    job = PrintJob.objects.filter(
        token=token,
        user_id=_user_id(user),
        context_id=context.id,
        session_key=session.session_key or "",
        expires_at__gt=timezone.now(),
    ).first()
    if job is None:
        raise Http404("No such print")
    return job


def print_job_pdf(
    *, user: UserLike, context_id: str, token: uuid.UUID, session: SessionBase
) -> encrypted_blobs.Plaintext:
    """Return the ready print PDF's bytes (decrypting as they stream); otherwise 404.

    The role is asked again: one that may no longer print gets nothing it made before.
    """
    if not roles.can(user, "print"):
        raise Http404("No such print")
    job = print_job_get(user=user, context_id=context_id, token=token, session=session)
    if job.state != ConversionState.READY or not job.blob_name:
        raise Http404("The print is not ready")
    try:
        return encrypted_blobs.read(job.blob_name, associated_data=_associated_data(job))
    except encrypted_blobs.BlobUnreadable as error:
        logger.warning("Print %s is unreadable; purged", job.pk)
        purge(PrintJob.objects.filter(pk=job.pk))
        raise Http404("The print is no longer available") from error


# The task's body --------------------------------------------------------------------------


def _associated_data(job: PrintJob) -> bytes:
    return f"viewer-print:{job.pk}:{job.user_id}:{job.context_id}:{job.token}".encode()


def _print_one(job: PrintJob, entry: dict[str, Any]) -> tuple[bytes, int, str]:
    """Return the document stamped (PDF bytes, page count) and the practice's trace ID.

    Raises ConversionFailed with the reason it cannot be printed.
    """
    if entry["unavailable"]:
        raise ConversionFailed(entry["unavailable"])
    if not print_kind(entry["content_type"]):
        raise ConversionFailed(cannot_print_reason(entry["content_type"]))
    data, trace_id = fetch_document(
        user=job.user,
        service_root=job.service_root,
        asid=job.asid,
        practice_ods=job.practice_ods,
        url=entry["url"],
    )
    try:
        pdf = document_pdf(data, entry["content_type"])
        provenance = Provenance(
            patient=job.provenance["patient"],
            document=f"{entry['title']} · Document date {entry['created'] or 'not known'}",
            practice=entry["practice"],
            printed=job.provenance["printed"],
        )
        return (*stamped(pdf, provenance), trace_id)
    except ConversionFailed as error:
        error.trace_id = trace_id
        raise


def print_time_budget() -> int:
    """Return the seconds a batch may spend starting documents; later ones are left out.

    A batch of letters takes a few seconds each; this leaves room for a few slow ones.
    """
    return 4 * int(settings.CONVERSION_TIMEOUT_SECONDS)


def print_time_limit() -> int:
    """Return the seconds a print task may run before it is asked to stop: the budget, and
    the time of the one document still being done when the budget ran out."""
    return print_time_budget() + conversion_time_limit()


OUT_OF_TIME = "The batch ran out of time before this document; print it on its own."
TOOK_TOO_LONG = "Preparing the print took too long and was stopped. Try printing fewer documents."
STOPPED = "The print stopped part way (the worker was lost). Try again."
NEVER_STARTED = "The print never started: the server is busy or its workers are down. Try again."


def _update(job: PrintJob, **fields: Any) -> int:
    # update() skips auto_now: say when, so the stuck-job sweep measures from the last
    # sign of life, not from when the job was queued.
    return PrintJob.objects.filter(pk=job.pk).update(updated_at=timezone.now(), **fields)


def _audit_document(
    job: PrintJob, entry: dict[str, Any], outcome: str, detail: str, trace_id: str = ""
) -> None:
    audit.record(
        user=job.user,
        action="batch_print" if job.batch else "print",
        outcome=outcome,
        nhs_number=job.nhs_number,
        context_id=job.context_id,
        document_id=entry["document_id"],
        trace_id=trace_id,
        detail=detail,
    )


def _fail_job(job: PrintJob, message: str, *, done: int, state: str | None = None) -> bool:
    """Fail the job (if it is still in `state`) and audit each document not yet done.

    One transaction: whoever sees the print fail also sees why in the audit trail.
    """
    with transaction.atomic():
        rows = PrintJob.objects.filter(pk=job.pk)
        if state is not None:
            rows = rows.filter(state=state)
        if not rows.update(
            state=ConversionState.FAILED, failure=message[:300], updated_at=timezone.now()
        ):
            return False
        for entry in job.documents[done:]:
            _audit_document(job, entry, "failure", f"not printed: {message}")
    return True


def run_print_job(job_id: int) -> str:
    """Build one print job's PDF into the encrypted store; return what happened.

    Each document is audited as it is done ("print", or "batch_print" in a batch). A batch
    lists the ones that failed on its cover sheet; a single print that fails says why. A
    batch stops starting documents after its time budget and leaves out any that would
    take it past BATCH_PRINT_MAX_PAGES; both are listed on the cover sheet.
    """
    claimed = PrintJob.objects.filter(
        pk=job_id, state=ConversionState.QUEUED, expires_at__gt=timezone.now()
    ).update(state=ConversionState.CONVERTING, done=0, updated_at=timezone.now())
    if not claimed:
        return "skipped"
    job = PrintJob.objects.select_related("user").get(pk=job_id)
    progress = {"done": 0}
    try:
        return _build(job, progress)
    except SoftTimeLimitExceeded:
        # Celery's soft time limit: the job fails with the reason, then Celery hears of it.
        _fail_job(job, TOOK_TOO_LONG, done=progress["done"])
        raise


def _build(job: PrintJob, progress: dict[str, int]) -> str:
    results: list[dict[str, Any]] = []
    parts: list[bytes] = []
    pages = 0
    max_pages = int(settings.BATCH_PRINT_MAX_PAGES)
    deadline = time.monotonic() + print_time_budget()
    can_download = roles.can(job.user, "download")
    for number, entry in enumerate(job.documents, start=1):
        trace_id = ""
        try:
            if not roles.can(job.user, "print"):
                raise ConversionFailed("The user's role no longer allows printing.")
            if time.monotonic() > deadline:
                raise ConversionFailed(OUT_OF_TIME)
            part, count, trace_id = _print_one(job, entry)
            if pages + count > max_pages:
                raise ConversionFailed(
                    f"It has {count} page{'s' if count != 1 else ''}, which would take the "
                    f"print past {max_pages} pages; print it on its own.",
                    trace_id=trace_id,
                )
        except ConversionFailed as error:
            trace_id = error.trace_id or trace_id
            # The reason is shown, and put on the cover sheet, for whoever printed it.
            reason = error.message if can_download else without_download_advice(error.message)
            results.append({"status": "failed", "reason": reason, "pages": 0})
            outcome, detail = "failure", f"not printed: {error.message}"
        except SoftTimeLimitExceeded:
            raise
        except Exception:
            logger.exception("Print %s: document %s failed unexpectedly", job.pk, number)
            reason = "It could not be converted (an unexpected error)."
            results.append({"status": "failed", "reason": reason, "pages": 0})
            outcome, detail = "failure", f"not printed: {reason}"
        else:
            parts.append(part)
            pages += count
            results.append({"status": "printed", "reason": "", "pages": count})
            outcome = "success"
            detail = f"print prepared: {count} page(s) with provenance"
        if job.batch:
            detail += f" (document {number} of {len(job.documents)} in batch print {job.token})"
        _audit_document(job, entry, outcome, detail, trace_id)
        progress["done"] = number
        _update(job, done=number, results=results)

    if not pages:
        reason = (
            results[0]["reason"] if len(results) == 1 else "None of the documents could be printed."
        )
        _update(job, state=ConversionState.FAILED, failure=reason[:300], results=results)
        return "failed"
    name = ""
    try:
        if job.batch:
            cover, count = stamped(
                cover_sheet(job, results),
                Provenance(
                    patient=job.provenance["patient"],
                    document=f"Cover sheet: {len(results)} documents",
                    practice=job.practice_ods,
                    printed=job.provenance["printed"],
                ),
            )
            parts.insert(0, cover)
            pages += count
        name, _ = encrypted_blobs.write(
            f"prints/{secrets.token_hex(16)}.bin",
            [merged(parts)],
            associated_data=_associated_data(job),
        )
    except SoftTimeLimitExceeded:
        encrypted_blobs.delete(name)
        raise
    except Exception:
        logger.exception("Print %s could not be assembled", job.pk)
        encrypted_blobs.delete(name)
        _update(job, state=ConversionState.FAILED, failure="The print could not be put together.")
        return "failed"
    finished = PrintJob.objects.filter(pk=job.pk, state=ConversionState.CONVERTING).update(
        state=ConversionState.READY,
        blob_name=name,
        pages=pages,
        results=results,
        expires_at=timezone.now() + cache_ttl(),
        updated_at=timezone.now(),
    )
    if not finished:
        encrypted_blobs.delete(name)
        return "purged"
    return "ready"


# Purging ----------------------------------------------------------------------------------


def purge(rows: QuerySet[PrintJob]) -> int:
    """Delete the jobs and their PDFs; return how many went."""
    doomed = list(rows.values_list("pk", "blob_name"))
    if not doomed:
        return 0
    PrintJob.objects.filter(pk__in=[pk for pk, _ in doomed]).delete()
    encrypted_blobs.delete_all(name for _, name in doomed)
    return len(doomed)


def purge_session(session_key: str | None) -> int:
    if not session_key:
        return 0
    return purge(PrintJob.objects.filter(session_key=session_key))


def purge_stale(now: datetime | None = None) -> int:
    """Fail lost prints, and purge expired ones and those whose session has ended.

    Beat runs this. A print is lost when it has run past its hard time limit since its
    last update, or waited in the queue past QUEUE_PATIENCE; its documents are audited.
    """
    now = now or timezone.now()
    lost = [
        (ConversionState.CONVERTING, stuck_before(now, print_time_limit()), STOPPED),
        (ConversionState.QUEUED, now - QUEUE_PATIENCE, NEVER_STARTED),
    ]
    for state, before, message in lost:
        for job in PrintJob.objects.select_related("user").filter(
            state=state, updated_at__lt=before
        ):
            _fail_job(job, message, done=job.done, state=state)
    gone = purge(PrintJob.objects.filter(expires_at__lte=now))
    sessions = set(PrintJob.objects.values_list("session_key", flat=True).distinct())
    ended = [key for key in sessions if not session_alive(key)]
    if ended:
        gone += purge(PrintJob.objects.filter(session_key__in=ended))
    return gone
