"""Previews made on the server, print PDFs and batch printing (services/previews.py, printing.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    QueryDict,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET, require_POST

from gpconnect import GPConnectError
from viewer import services
from viewer.http import is_htmx
from viewer.presenters import ErrorPanel, PatientBanner
from viewer.roles import require_role
from viewer.services import previews, printing
from viewer.views import _document_error, content_disposition

# What a converted part may do in its frame: nothing at all, bar the sanitised HTML's own
# small stylesheet. The frame is sandboxed as well (templates/viewer/_conversion.html).
PART_POLICY = "sandbox; default-src 'none'; style-src 'unsafe-inline'"


@require_GET
@never_cache
@login_required
@require_role("Clinician", "Receptionist")
def document_preview(request: HttpRequest, context_id: str, document_id: str) -> HttpResponse:
    """The document page's preview region: starts the conversion, then is polled until done."""
    return _conversion(request, context_id, document_id, previews.conversion_start)


@require_POST
@never_cache
@login_required
@require_role("Clinician", "Receptionist")
def document_preview_retry(
    request: HttpRequest, context_id: str, document_id: str
) -> HttpResponseBase:
    """Try again: replace a failed conversion with a new one (a form without htmx)."""
    response = _conversion(request, context_id, document_id, previews.conversion_retry)
    if not is_htmx(request):
        return redirect("viewer:document", context_id=context_id, document_id=document_id)
    return response


def _conversion(
    request: HttpRequest,
    context_id: str,
    document_id: str,
    start: Callable[..., previews.ConversionStatus],
) -> HttpResponse:
    values: dict[str, object] = {"context_id": context_id, "document_id": document_id}
    try:
        values["status"] = start(
            user=request.user,
            context_id=context_id,
            document_id=document_id,
            session=request.session,
        )
    except GPConnectError as exc:
        values["error"] = ErrorPanel.of(exc)
    except Http404:
        if not is_htmx(request):
            raise
        # A poll whose patient or session has gone: say so in place, once, and stop; the
        # global htmx error message would be added above the page at every poll.
        values["gone"] = True
    response = render(request, "viewer/_conversion.html", values)
    if "status" not in values or not values["status"].pending:  # type: ignore[attr-defined]
        response.status_code = 286  # htmx stops polling on this status
    return response


@require_GET
@never_cache
@xframe_options_sameorigin  # the document page shows HTML and text parts in a frame
@login_required
@require_role("Clinician", "Receptionist")
def document_converted(
    request: HttpRequest, context_id: str, document_id: str, part: int
) -> HttpResponseBase:
    """One part of a ready preview (a PNG page, the PDF, the HTML or the text)."""
    converted = previews.converted_part(
        user=request.user,
        context_id=context_id,
        document_id=document_id,
        session=request.session,
        part=part,
    )
    response = StreamingHttpResponse(converted.chunks, content_type=converted.content_type)
    response["Content-Disposition"] = content_disposition("inline", f"preview-{part}")
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = PART_POLICY
    return response


@require_POST
@never_cache
@login_required
@require_role("Clinician", "Receptionist")
def document_print(request: HttpRequest, context_id: str, document_id: str) -> HttpResponseBase:
    """Print: queue the print PDF of one document (or reuse this session's), then redirect
    to its progress page, so reloading or going back never makes a second print."""
    try:
        job = printing.print_start(
            user=request.user,
            context_id=context_id,
            document_id=document_id,
            session=request.session,
        )
    except GPConnectError as exc:
        return _document_error(request, context_id, document_id, exc)
    return redirect("viewer:print_job", context_id=context_id, token=job.token)


class _DocumentKeys(forms.MultipleChoiceField):
    """Opaque document ids: any of the right shape; the service checks each is the patient's."""

    def valid_value(self, value: str) -> bool:
        return 0 < len(value) <= 64 and value.isalnum()


class BatchPrintForm(forms.Form):
    """The documents table's checkboxes, at most one batch's worth."""

    document = _DocumentKeys(error_messages={"required": "Select at least one document to print."})

    def clean_document(self) -> list[str]:
        chosen: list[str] = self.cleaned_data["document"]
        limit = int(settings.BATCH_PRINT_MAX_DOCUMENTS)
        if len(set(chosen)) > limit:
            raise forms.ValidationError(f"Select at most {limit} documents to print together.")
        return chosen


@require_POST
@never_cache
@login_required
@require_role("Clinician", "Receptionist")
def batch_print(request: HttpRequest, context_id: str) -> HttpResponseBase:
    """Print selected: queue one merged PDF with a cover sheet, then show its progress."""
    context = services.patient_context_get(
        user=request.user, context_id=context_id, session=request.session
    )
    form = BatchPrintForm(request.POST)
    if not form.is_valid():
        # Back to the documents table as it was (its filters and page), where an error
        # summary above the table says what to do.
        chosen = set(request.POST.getlist("document"))
        query = QueryDict(request.POST.get("query", ""), mutable=True)
        query["print_error"] = (
            "none"
            if not chosen
            else "too-many"
            if len(chosen) > int(settings.BATCH_PRINT_MAX_DOCUMENTS)
            else "invalid"
        )
        patient_url = reverse("viewer:patient", kwargs={"context_id": context.id})
        return redirect(f"{patient_url}?{query.urlencode()}#batch-print-errors")
    try:
        job = printing.batch_print_start(
            user=request.user,
            context_id=context.id,
            document_ids=form.cleaned_data["document"],
            session=request.session,
        )
    except GPConnectError as exc:
        return render(
            request,
            "viewer/print_job.html",
            {
                "context": context,
                "banner": PatientBanner.of(context, today=timezone.localdate()),
                "error": ErrorPanel.of(exc),
            },
            status=502,
        )
    return redirect("viewer:print_job", context_id=context.id, token=job.token)


def _job_context(request: HttpRequest, context_id: str, token: uuid.UUID) -> dict[str, object]:
    job = printing.print_job_get(
        user=request.user, context_id=context_id, token=token, session=request.session
    )
    context = services.patient_context_get(
        user=request.user, context_id=context_id, session=request.session
    )
    return {
        "job": job,
        "context": context,
        "banner": PatientBanner.of(context, today=timezone.localdate()),
        "first": job.documents[0] if job.documents else None,
    }


@require_GET
@never_cache
@login_required
@require_role("Clinician", "Receptionist")
def print_job(request: HttpRequest, context_id: str, token: uuid.UUID) -> HttpResponse:
    """The print page: progress while the PDF is built, then the PDF and the print dialogue."""
    return render(request, "viewer/print_job.html", _job_context(request, context_id, token))


@require_GET
@never_cache
@login_required
@require_role("Clinician", "Receptionist")
def print_status(request: HttpRequest, context_id: str, token: uuid.UUID) -> HttpResponse:
    """The print page's poll: progress, then the finished PDF (HTTP 286 stops the poll)."""
    try:
        values = _job_context(request, context_id, token)
    except Http404:
        # Expired, purged or signed out: say so in place and stop polling (see _conversion).
        return render(request, "viewer/print_job.html#gone", {}, status=286)
    response = render(request, "viewer/print_job.html#status", values)
    if not values["job"].pending:  # type: ignore[attr-defined]
        response.status_code = 286
    return response


@require_GET
@never_cache
@login_required
@require_role("Clinician", "Receptionist")
def print_pdf(request: HttpRequest, context_id: str, token: uuid.UUID) -> HttpResponseBase:
    """The finished print PDF, for pdf.js to draw on the print page."""
    chunks = printing.print_job_pdf(
        user=request.user, context_id=context_id, token=token, session=request.session
    )
    response = StreamingHttpResponse(chunks, content_type="application/pdf")
    response["Content-Disposition"] = content_disposition("inline", "print.pdf")
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "sandbox; default-src 'none'"
    return response
