from __future__ import annotations

import unicodedata
from urllib.parse import quote

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LogoutView
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from gpconnect import GPConnectError, errors
from viewer import health, services
from viewer.forms import DocumentFiltersForm, NhsNumberForm
from viewer.http import is_htmx
from viewer.presenters import ErrorPanel, PatientBanner
from viewer.roles import can, require_role


@require_http_methods(["GET", "POST"])
@never_cache
@login_required
def home(request: HttpRequest) -> HttpResponse:
    # Every signed-in user lands here; only those who may search get the form.
    searcher = can(request.user, "search")
    if request.method == "POST" and not searcher:
        raise PermissionDenied
    form = NhsNumberForm(request.POST if request.method == "POST" else None)
    error: services.PatientLookupError | GPConnectError | None = None
    if searcher and form.is_valid():
        try:
            context = services.patient_open(
                user=request.user,
                nhs_number=form.cleaned_data["nhs_number"],
                session=request.session,
            )
        except (services.PatientLookupError, GPConnectError) as exc:
            error = exc
        else:
            # POST, then redirect to an opaque URL: the NHS number never enters a URL.
            return redirect("viewer:patient", context_id=context.id)
    recent = services.patient_recent(user=request.user, session=request.session) if searcher else []
    return render(
        request,
        "viewer/home.html",
        {
            "searcher": searcher,
            "form": form,
            "error": ErrorPanel.of(error) if error else None,
            "recent": recent,
            "demo_patients": services.demo_patients() if searcher else [],
        },
    )


@require_GET
@never_cache
@vary_on_headers("HX-Request")
@login_required
@require_role("Clinician", "Receptionist")
def patient(request: HttpRequest, context_id: str) -> HttpResponse:
    context = services.patient_context_get(
        user=request.user, context_id=context_id, session=request.session
    )
    form = DocumentFiltersForm(request.GET)
    page, error = None, None
    if form.is_valid():
        try:
            page = services.documents_list(
                user=request.user,
                context_id=context.id,
                session=request.session,
                filters=form.filters(),
            )
        except GPConnectError as exc:
            error = exc
    template = "viewer/patient.html#documents" if is_htmx(request) else "viewer/patient.html"
    return render(
        request,
        template,
        {
            "context": context,
            "banner": PatientBanner.of(context, today=timezone.localdate()),
            "form": form,
            "page": page,
            "error": ErrorPanel.of(error) if error else None,
            "batch_errors": batch_print_errors(request.GET.get("print_error", "")),
        },
    )


def batch_print_errors(code: str) -> list[str]:
    """What went wrong with a batch print (preview_views.batch_print sends back its code)."""
    limit = int(settings.BATCH_PRINT_MAX_DOCUMENTS)
    messages = {
        "none": "Select at least one document to print.",
        "too-many": f"Select at most {limit} documents to print together.",
        "invalid": "Select the documents to print again.",
    }
    return [messages[code]] if code in messages else []


@require_GET
@never_cache
@login_required
@require_role("Clinician", "Receptionist")
def prefetch_status(request: HttpRequest, context_id: str) -> HttpResponse:
    """The document rows' poll: each prefetch's state, swapped out of band into its row."""
    statuses = services.prefetch_statuses(
        user=request.user,
        context_id=context_id,
        session=request.session,
        keys=request.GET.getlist("key"),
    )
    response = render(request, "viewer/patient.html#prefetch_statuses", {"statuses": statuses})
    if not any(status.pending for status in statuses):
        response.status_code = 286  # htmx stops polling on this status
    return response


@require_GET
@never_cache
@login_required
@require_role("Clinician", "Receptionist")
def linked(request: HttpRequest, context_id: str) -> HttpResponse:
    context = services.patient_context_get(
        user=request.user, context_id=context_id, session=request.session
    )
    page, error = None, None
    try:
        page = services.linked_documents(
            user=request.user, context_id=context.id, session=request.session
        )
    except GPConnectError as exc:
        error = exc
    return render(
        request,
        "viewer/linked.html",
        {
            "context": context,
            "banner": PatientBanner.of(context, today=timezone.localdate()),
            "page": page,
            "error": ErrorPanel.of(error) if error else None,
        },
    )


@require_GET
@never_cache
@login_required
@require_role("Clinician", "Receptionist")
def document(request: HttpRequest, context_id: str, document_id: str) -> HttpResponse:
    try:
        view = services.document_get(
            user=request.user,
            context_id=context_id,
            document_id=document_id,
            session=request.session,
        )
    except GPConnectError as exc:
        return _document_error(request, context_id, document_id, exc)
    return render(
        request,
        "viewer/document.html",
        {
            "document": view,
            "details": view.details,
            "context": view.context,
            "banner": PatientBanner.of(view.context, today=timezone.localdate()),
        },
    )


@require_GET
@never_cache
@login_required
@require_role("Clinician", "Receptionist")
def document_download(request: HttpRequest, context_id: str, document_id: str) -> HttpResponseBase:
    return _document_bytes(request, context_id, document_id, inline=False)


@require_GET
@never_cache
@xframe_options_sameorigin  # the document page shows it in an iframe
@login_required
@require_role("Clinician", "Receptionist")
def document_inline(request: HttpRequest, context_id: str, document_id: str) -> HttpResponseBase:
    return _document_bytes(request, context_id, document_id, inline=True)


def _document_bytes(
    request: HttpRequest, context_id: str, document_id: str, *, inline: bool
) -> HttpResponseBase:
    try:
        stream = services.document_stream(
            user=request.user,
            context_id=context_id,
            document_id=document_id,
            session=request.session,
            inline=inline,
        )
    except (services.DocumentUnavailable, GPConnectError) as exc:
        return _document_error(request, context_id, document_id, exc)
    response = StreamingHttpResponse(stream, content_type=stream.content_type)
    response["Content-Disposition"] = content_disposition(
        "inline" if inline else "attachment", stream.filename
    )
    response["X-Content-Type-Options"] = "nosniff"
    if inline:
        response["Content-Security-Policy"] = "sandbox; default-src 'none'"
    # No Content-Length: the provider's attachment.size may be wrong, and a length that
    # does not match the body breaks the download.
    return response


def content_disposition(disposition: str, filename: str) -> str:
    """Return the header with an ASCII `filename` and the exact `filename*` (RFC 6266/5987)."""
    fallback = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    fallback = "".join(ch for ch in fallback if ch.isprintable() and ch not in '"\\') or "document"
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _error_status(error: Exception) -> int:
    if isinstance(error, services.DocumentUnavailable | errors.NotFound):
        return 404
    if isinstance(error, errors.ProviderUnavailable):
        return 503
    return 502


def _document_error(
    request: HttpRequest, context_id: str, document_id: str, error: Exception
) -> HttpResponse:
    """The error panel page for a document that could not be shown or fetched."""
    return render(
        request,
        "viewer/document_error.html",
        {
            "error": ErrorPanel.of(error),
            "context_id": context_id,
            "document_id": document_id,
        },
        status=_error_status(error),
    )


@require_POST
def sign_out(request: HttpRequest) -> HttpResponseBase:
    """Django's sign-out, and the browser told to drop its cache and storage for our site."""
    response = LogoutView.as_view()(request)
    response["Clear-Site-Data"] = '"cache", "storage"'
    return response


@require_GET
@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    # Plain text for load balancers and humans alike; failures are logged, never shown.
    checks = {"database": health.database_ok(), "cache": health.cache_ok()}
    healthy = all(checks.values())
    lines = [f"status: {'ok' if healthy else 'error'}"]
    lines += [f"{name}: {'ok' if ok else 'error'}" for name, ok in checks.items()]
    return HttpResponse(
        "\n".join(lines) + "\n",
        content_type="text/plain; charset=utf-8",
        status=200 if healthy else 503,
    )
