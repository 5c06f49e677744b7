"""The auditor pages: search the audit trail and export it as CSV. Auditors only."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseBase,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from gpconnect import nhs_number as nhs
from viewer import audit
from viewer.models import AuditAction, AuditOutcome
from viewer.roles import AUDITOR, require_role

PAGE_SIZE = 50


class AuditSearchForm(forms.Form):
    nhs_number = forms.CharField(label="NHS number", required=False, max_length=20)
    username = forms.CharField(label="Username", required=False, max_length=150)
    date_from = forms.DateField(label="From", required=False, help_text="For example, 2025-03-27")
    date_to = forms.DateField(label="To", required=False, help_text="For example, 2025-03-31")
    # Set by the page, not the user: the sequence number the listing stops at while paged.
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def clean_nhs_number(self) -> str:
        # Any 10 digits: an auditor may need to look up a number that was typed wrongly.
        number = nhs.normalise(self.cleaned_data["nhs_number"])
        if number and not (len(number) == 10 and number.isascii() and number.isdigit()):
            raise forms.ValidationError("NHS number must be 10 digits")
        return number

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        date_from, date_to = cleaned.get("date_from"), cleaned.get("date_to")
        if date_from and date_to and date_from > date_to:
            self.add_error("date_to", "The 'to' date must be the same as or after the 'from' date")
        return cleaned

    def filters(self) -> dict[str, Any]:
        """Return the cleaned filters as keyword arguments for `audit.events_matching`."""
        return {key: self.cleaned_data[key] for key in self.fields}

    def describe(self) -> str:
        """Return the filters in use, for the audit row that records this search."""
        used = [f"{key}={value}" for key, value in self.filters().items() if value]
        return "Filters: " + (", ".join(used) if used else "none")


@require_GET
@never_cache
@login_required
@require_role(AUDITOR)
def audit_search(request: HttpRequest) -> HttpResponse:
    form = AuditSearchForm(request.GET)
    page = None
    context: dict[str, Any] = {}
    if form.is_valid():
        this_search = audit.record(
            user=request.user,
            action=AuditAction.AUDIT_SEARCH,
            outcome=AuditOutcome.SUCCESS,
            nhs_number=form.cleaned_data["nhs_number"],
            detail=form.describe(),
            request=request,
        )
        # Pages show the trail as it was at the first page, so rows written since
        # (this search among them) do not shift them.
        before = form.cleaned_data["before"] or this_search.pk
        events = audit.events_matching(**{**form.filters(), "before": before})
        page = Paginator(events, PAGE_SIZE).get_page(request.GET.get("page"))
        context["before"] = before
    context.update(form=form, page=page)
    return render(request, "viewer/audit.html", context)


@require_GET
@never_cache
@login_required
@require_role(AUDITOR)
def audit_export(request: HttpRequest) -> HttpResponseBase:
    form = AuditSearchForm(request.GET)
    if not form.is_valid():
        return HttpResponseBadRequest("Invalid filters", content_type="text/plain")
    this_export = audit.record(
        user=request.user,
        action=AuditAction.AUDIT_EXPORT,
        outcome=AuditOutcome.SUCCESS,
        nhs_number=form.cleaned_data["nhs_number"],
        detail=form.describe(),
        request=request,
    )
    before = form.cleaned_data["before"] or this_export.pk
    events = audit.events_matching(**{**form.filters(), "before": before})
    filename = f"audit-{timezone.now().astimezone(dt.UTC):%Y%m%dT%H%M%SZ}.csv"
    response = StreamingHttpResponse(
        audit.csv_lines(events), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
