"""The only bridge between Django and the gpconnect library.

Views and tasks call these functions; nothing else reads GP Connect settings or builds
`gpconnect` objects, so the library stays free of Django. Every function that touches a
patient writes an audit event, success or failure.
"""

from __future__ import annotations

import atexit
import logging
import math
import mimetypes
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from importlib import import_module
from typing import Any
from urllib.parse import urlencode

import filetype
import httpx
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.contrib.sessions.backends.base import SessionBase
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.utils import timezone
from django.utils.crypto import salted_hmac
from django.utils.html import strip_tags

from gpconnect import (
    DocumentSummary,
    GPConnectClient,
    GPConnectError,
    Interactions,
    LinkedDocument,
    PersonalDemographics,
    ProviderEndpoint,
    SdsCache,
    SpineDirectory,
    build_http_client,
)
from gpconnect.config import ClientConfig, Consumer, Timeouts, TLSConfig
from viewer import audit, roles
from viewer.context import (
    Demographics,
    PatientContext,
    context_get,
    context_recent,
    context_store,
    demographic_differences,
    new_context_id,
)
from viewer.encrypted_blobs import BlobUnreadable
from viewer.presenters import (
    DocumentDetails,
    DocumentRow,
    as_date,
    file_size,
    format_label,
    short_date,
)
from viewer.request_id import current_request_id

PAGE_SIZE = 25
# How long a practice's document list is reused for sorting, paging and keyword changes.
DOCUMENT_LIST_CACHE_SECONDS = 180
SDS_SESSION_KEY = "viewer_sds_cache"

logger = logging.getLogger(__name__)

UserLike = AbstractBaseUser | AnonymousUser


def gpconnect_client_config() -> ClientConfig:
    """Return the library's client configuration built from the GPCONNECT_* settings."""
    return ClientConfig(
        consumer=Consumer(
            asid=settings.GPCONNECT_CONSUMER_ASID,
            ods_code=settings.GPCONNECT_CONSUMER_ODS_CODE,
            organisation_name=settings.GPCONNECT_CONSUMER_ORG_NAME,
            issuer=settings.GPCONNECT_JWT_ISSUER,
            organisation_type=settings.GPCONNECT_ORGANISATION_TYPE or None,
            organisation_phone=settings.GPCONNECT_ORGANISATION_PHONE or None,
        ),
        spine_proxy_url=settings.GPCONNECT_SPINE_PROXY_URL,
        tls=TLSConfig(
            client_cert=settings.GPCONNECT_TLS_CLIENT_CERT,
            client_key=settings.GPCONNECT_TLS_CLIENT_KEY,
            ca_bundle=settings.GPCONNECT_TLS_CA_BUNDLE,
        ),
        timeouts=Timeouts(
            connect=float(settings.GPCONNECT_CONNECT_TIMEOUT),
            read=float(settings.GPCONNECT_READ_TIMEOUT),
        ),
    )


_http: httpx.Client | None = None
_http_lock = threading.Lock()


def http_client() -> httpx.Client:
    """Return the process's one pooled httpx client, built on first use.

    Building one costs 30–45 ms (its SSL context), and sharing it keeps connections to
    the Spine alive between requests; httpx clients are safe to share between threads.
    """
    global _http
    if _http is None:
        with _http_lock:
            if _http is None:
                _http = build_http_client(gpconnect_client_config())
                # Its pooled connections are closed cleanly when the process exits.
                atexit.register(_http.close)
    return _http


# Errors ---------------------------------------------------------------------------------


class PatientLookupError(Exception):
    """The search stopped before the documents, for a reason that is not a provider fault.

    It has the attributes of `gpconnect.GPConnectError` that the error panel shows.
    """

    def __init__(
        self, message: str, *, reason: str, trace_id: str | None = None, retryable: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason  # restricted, no_practice or not_registered
        self.trace_id = trace_id
        self.retryable = retryable


# The specification requires no GP Connect call at all for an S-flagged patient, and the
# message must not reveal the flag (UX-SECURITY.md §1.5).
RESTRICTED_MESSAGE = (
    "This patient's GP record cannot be shown through this service. Contact the patient's "
    "GP practice directly if you need the information."
)
NO_PRACTICE_MESSAGE = (
    "The Personal Demographics Service (PDS) has no registered GP practice for this "
    "patient, so there is no GP record to show."
)
NOT_REGISTERED_MESSAGE = (
    "The patient is not registered at their GP practice's system, or their record is not "
    "available through GP Connect. Contact the practice if you need the information."
)


# Opening a patient ----------------------------------------------------------------------


def _spine(session: SessionBase, http: httpx.Client) -> tuple[PersonalDemographics, SpineDirectory]:
    retry = gpconnect_client_config().retry
    pds = PersonalDemographics(
        settings.GPCONNECT_PDS_URL, http=http, api_key=settings.GPCONNECT_PDS_API_KEY, retry=retry
    )
    sds = SpineDirectory(
        settings.GPCONNECT_SDS_URL,
        http=http,
        api_key=settings.GPCONNECT_SDS_API_KEY,
        retry=retry,
        # SDS answers may be kept for the user's session only (SPEC §4.6).
        cache=SdsCache.from_dict(session.get(SDS_SESSION_KEY, {})),
    )
    return pds, sds


def _client(user: UserLike, endpoint: ProviderEndpoint) -> GPConnectClient:
    return GPConnectClient(
        gpconnect_client_config(),
        user=roles.requesting_user(user),
        endpoint=endpoint,
        http=http_client(),
    )


def _user_id(user: UserLike) -> int:
    if user.pk is None:
        raise PermissionError("patient data needs a signed-in user")
    return int(user.pk)


def patient_open(*, user: UserLike, nhs_number: str, session: SessionBase) -> PatientContext:
    """Trace the patient, find their practice and their record there; keep the context.

    Raises `PatientLookupError` when the search must stop (restricted patient, no
    practice, not registered) and `gpconnect.GPConnectError` for Spine or provider faults.
    Audits "search" either way.
    """
    number = "".join(ch for ch in nhs_number if ch.isdigit())
    trace_ids: list[str] = []
    try:
        context = _patient_open(user=user, nhs_number=number, session=session, trace=trace_ids)
    except (PatientLookupError, GPConnectError) as error:
        reason = error.reason if isinstance(error, PatientLookupError) else type(error).__name__
        audit.record(
            user=user,
            action="search",
            # A restricted patient is a refusal by rule; everything else a failure.
            outcome="denied" if reason == "restricted" else "failure",
            nhs_number=number,
            trace_id=error.trace_id or "",
            detail=_trace_detail(trace_ids, f"{reason}: {error.message}"),
        )
        raise
    audit.record(
        user=user,
        action="search",
        outcome="success",
        nhs_number=number,
        context_id=context.id,
        trace_id=trace_ids[-1] if trace_ids else "",
        detail=_trace_detail(trace_ids, ""),
    )
    return context


def _trace_detail(trace_ids: Sequence[str], detail: str) -> str:
    steps = f"trace IDs (PDS, GP Connect): {', '.join(trace_ids)}" if trace_ids else ""
    return "; ".join(part for part in (detail, steps) if part)


def _patient_open(
    *, user: UserLike, nhs_number: str, session: SessionBase, trace: list[str]
) -> PatientContext:
    http = http_client()
    pds, sds = _spine(session, http)
    pds_patient, pds_trace = pds.trace(nhs_number)
    trace.append(pds_trace)
    if pds_patient.restricted:
        raise PatientLookupError(RESTRICTED_MESSAGE, reason="restricted", trace_id=pds_trace)
    if not pds_patient.registered_practice_ods:
        raise PatientLookupError(NO_PRACTICE_MESSAGE, reason="no_practice", trace_id=pds_trace)

    try:
        endpoint = sds.provider_endpoint(
            pds_patient.registered_practice_ods, Interactions.DOCUMENTS_SEARCH
        )
    finally:
        session[SDS_SESSION_KEY] = sds.cache.to_dict()
    found = _client(user, endpoint).find_patient(nhs_number)
    trace.append(found.trace_id)
    if found.patient is None:
        raise PatientLookupError(
            NOT_REGISTERED_MESSAGE, reason="not_registered", trace_id=found.trace_id
        )

    pds_demographics = Demographics.of(pds_patient)
    practice_demographics = Demographics.of(found.patient)
    context = PatientContext(
        id=new_context_id(),
        user_id=_user_id(user),
        nhs_number=nhs_number,
        practice_ods=endpoint.ods_code,
        service_root=endpoint.service_root,
        asid=endpoint.asid,
        logical_id=found.patient.id,
        pds=pds_demographics,
        practice=practice_demographics,
        differences=tuple(demographic_differences(pds_demographics, practice_demographics)),
        opened_at=timezone.now(),
    )
    context_store(session, context)
    return context


@dataclass(frozen=True)
class DemoPatient:
    scenario: str
    description: str
    nhs_number: str


def demo_patients() -> list[DemoPatient]:
    """Return the sandbox's patients, one per scenario, in demo mode only (else none)."""
    if not settings.DEMO_MODE:
        return []
    from gpconnect.sandbox.catalogue import PATIENTS  # the sandbox exists only in demos

    return [
        DemoPatient(p.scenario, p.description, p.nhs_number)
        for p in PATIENTS
        if p.scenario != "stress"
    ]


def patient_recent(*, user: UserLike, session: SessionBase) -> list[PatientContext]:
    """Return the patients this user opened in this session, the most recent first."""
    return context_recent(session, user_id=_user_id(user))


def patient_context_get(*, user: UserLike, context_id: str, session: SessionBase) -> PatientContext:
    """Return the context only if this user opened it in this session; otherwise 404.

    A miss is audited as "access_denied": it is someone following a link they were not
    given, or a session that has ended.
    """
    context = context_get(session, user_id=_user_id(user), context_id=context_id)
    if context is None:
        audit.record(
            user=user,
            action="access_denied",
            outcome="denied",
            context_id=context_id[:64],
            detail="patient context not in this user's session",
        )
        raise Http404("No such patient in this session")
    return context


# The documents list -----------------------------------------------------------------------

DATE_PRESETS: dict[str, str] = {
    "all": "All dates",
    "3m": "Last 3 months",
    "1y": "Last year",
    "5y": "Last 5 years",
    "custom": "Custom range",
}
_PRESET_MONTHS = {"3m": 3, "1y": 12, "5y": 60}

SORT_COLUMNS: dict[str, str] = {
    "created": "Document date",
    "indexed": "Filed",
    "type": "Type",
    "title": "Title",
    "author": "Author",
    "format": "Format and size",
}
DEFAULT_SORT = ("created", "desc")


def months_before(day: date, months: int) -> date:
    """Return the same day `months` earlier, clamped to the end of a shorter month."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    next_month = date(year + month // 12, month % 12 + 1, 1)
    return date(year, month, min(day.day, (next_month - timedelta(days=1)).day))


@dataclass(frozen=True)
class DocumentFilters:
    """What the user asked of the list: validated by `forms.DocumentFiltersForm`."""

    preset: str = "all"
    created_from: date | None = None
    created_to: date | None = None
    keyword: str = ""
    author: str = ""
    sort: str = DEFAULT_SORT[0]
    direction: str = DEFAULT_SORT[1]
    page: int = 1

    def created_range(self, today: date) -> tuple[date | None, date | None]:
        """Return the created ge/le bounds the provider is sent."""
        if self.preset in _PRESET_MONTHS:
            return months_before(today, _PRESET_MONTHS[self.preset]), None
        if self.preset == "custom":
            return self.created_from, self.created_to
        return None, None

    @property
    def filtered(self) -> bool:
        return self.preset != "all" or bool(self.keyword) or bool(self.author)

    def description(self, today: date) -> str:
        """Return the active filters in words ("last year; keyword “letter”"), or ""."""
        parts = []
        if self.preset in _PRESET_MONTHS:
            parts.append(DATE_PRESETS[self.preset].lower())
        elif self.preset == "custom":
            start, end = self.created_range(today)
            if start and end:
                parts.append(f"from {short_date(start)} to {short_date(end)}")
            elif start:
                parts.append(f"from {short_date(start)}")
            elif end:
                parts.append(f"up to {short_date(end)}")
        if self.keyword:
            parts.append(f"keyword “{self.keyword}”")
        if self.author:
            parts.append(f"author organisation {self.author}")
        return "; ".join(parts)

    def query(self, **changes: Any) -> str:
        """Return the query string for these filters with `changes`, defaults left out."""
        values = replace(self, **changes)
        params: list[tuple[str, str]] = []
        if values.preset != "all":
            params.append(("date", values.preset))
        if values.preset == "custom":
            if values.created_from:
                params.append(("from", values.created_from.isoformat()))
            if values.created_to:
                params.append(("to", values.created_to.isoformat()))
        if values.keyword:
            params.append(("keyword", values.keyword))
        if values.author:
            params.append(("author", values.author))
        if (values.sort, values.direction) != DEFAULT_SORT:
            params += [("sort", values.sort), ("dir", values.direction)]
        if values.page != 1:
            params.append(("page", str(values.page)))
        return "?" + urlencode(params) if params else "?"


@dataclass(frozen=True)
class SortHeader:
    key: str
    label: str
    aria_sort: str  # "ascending", "descending" or "none"
    query: str  # the link: this column, the other direction if it is already sorted on


@dataclass(frozen=True)
class PageLink:
    number: int
    query: str
    current: bool
    gap_before: bool = False  # numbers were skipped before this one (an ellipsis)


@dataclass(frozen=True)
class DocumentsPage:
    """One page of a patient's documents, ready for the table."""

    rows: list[DocumentRow]
    total: int
    page: int
    pages: int
    start: int
    end: int
    filters: DocumentFilters
    filter_description: str
    headers: list[SortHeader]
    page_links: list[PageLink]
    previous_query: str | None
    next_query: str | None
    author_options: list[tuple[str, str]]
    has_not_for_patient: bool
    trace_id: str
    retrieved_at: datetime
    clear_query: str = "?"
    letters_only: bool = False

    @property
    def prefetch_pending_keys(self) -> list[str]:
        """The rows whose prefetch is still on its way: the status poll asks about these."""
        return [r.key for r in self.rows if r.prefetch is not None and r.prefetch.pending]

    @property
    def sort_description(self) -> str:
        order = "ascending" if self.filters.direction == "asc" else "descending"
        return f"{SORT_COLUMNS[self.filters.sort].lower()}, {order}"

    @property
    def showing(self) -> str:
        noun = "document" if self.total == 1 else "documents"
        if self.total == 0:
            return "Showing 0 documents"
        return f"Showing {self.start}–{self.end} of {self.total} {noun}"


@dataclass(frozen=True)
class _Search:
    documents: tuple[DocumentSummary, ...]
    trace_id: str
    retrieved_at: datetime


def _cache_key(
    user_id: int, context_id: str, start: date | None, end: date | None, author: str
) -> str:
    return f"viewer:documents:{user_id}:{context_id}:{start}:{end}:{author}"


CACHED_KEYS_SESSION_KEY = "viewer_cached_lists"


def _cache_put(session: SessionBase, key: str, value: object) -> None:
    """Cache a provider answer briefly, and note its key so sign-out can purge it."""
    cache.set(key, value, DOCUMENT_LIST_CACHE_SECONDS)
    keys = session.get(CACHED_KEYS_SESSION_KEY, [])
    if key not in keys:
        session[CACHED_KEYS_SESSION_KEY] = [*keys, key]


def purge_cached_patient_data(session: SessionBase) -> None:
    """Delete every provider answer this session cached (called at sign-out).

    Document lists are kept for DOCUMENT_LIST_CACHE_SECONDS so sorting and paging need
    not ask the practice again; at sign-out they go at once (ASVS V14.2.2).
    """
    keys = session.pop(CACHED_KEYS_SESSION_KEY, [])
    if keys:
        cache.delete_many(keys)


def _search(
    user: UserLike,
    context: PatientContext,
    start: date | None,
    end: date | None,
    author: str,
    session: SessionBase,
) -> tuple[_Search, bool]:
    """Return the provider's list for the filters it applies, reusing a recent answer."""
    key = _cache_key(context.user_id, context.id, start, end, author)
    cached = cache.get(key)
    if isinstance(cached, _Search):
        return cached, True
    result = _client(user, _documents_endpoint(context)).search_documents(
        context.logical_id, created_from=start, created_to=end, author_ods=author or None
    )
    search = _Search(result.documents, result.trace_id, timezone.now())
    _cache_put(session, key, search)
    return search, False


def _sort_key(column: str) -> Callable[[DocumentSummary], Any]:
    def when(value: datetime | date | None) -> Any:
        if isinstance(value, datetime):
            return (value.date(), value.replace(tzinfo=None).time())
        return (value, datetime.min.time()) if value else None

    keys: dict[str, Callable[[DocumentSummary], Any]] = {
        "created": lambda d: when(d.created),
        "indexed": lambda d: when(d.indexed),
        "type": lambda d: (d.type.display if d.type else "").casefold() or None,
        "title": lambda d: d.title.casefold() or None,
        "author": lambda d: (
            " ".join(filter(None, [d.author_organisation, d.author_practitioner])).casefold()
            or None
        ),
        "format": lambda d: (format_label(d.content_type).casefold(), d.size or 0),
    }
    return keys[column]


def _sorted(
    documents: Sequence[DocumentSummary], column: str, direction: str
) -> list[DocumentSummary]:
    """Sort on one column; documents without a value come last in either direction."""
    key = _sort_key(column)
    present = [d for d in documents if key(d) is not None]
    missing = [d for d in documents if key(d) is None]
    # Ties keep the provider's order, then title, so the order is stable across pages.
    present.sort(key=lambda d: d.title.casefold())
    present.sort(key=key, reverse=direction == "desc")
    return present + missing


def _is_letter(document: DocumentSummary) -> bool:
    """Receptionists see letters only (roles.letters_only): by type, else by title."""
    words = ("letter", "correspondence")
    text = (document.type.display if document.type else document.title).casefold()
    return any(word in text for word in words)


def _matches(document: DocumentSummary, keyword: str) -> bool:
    haystack = " ".join(
        filter(None, [document.title, document.type.display if document.type else ""])
    ).casefold()
    return all(word in haystack for word in keyword.casefold().split())


def documents_list(
    *, user: UserLike, context_id: str, session: SessionBase, filters: DocumentFilters
) -> DocumentsPage:
    """Return one page of the patient's documents, filtered, sorted and paged here.

    The date range and author organisation go to the provider (`created=ge/le`,
    `author`); the keyword is matched here over title and type, because providers
    implement `description` differently (or not at all) and because it lets a keyword
    change reuse the cached list instead of asking the practice again.
    """
    context = patient_context_get(user=user, context_id=context_id, session=session)
    today = timezone.localdate()
    start, end = filters.created_range(today)
    try:
        search, from_cache = _search(user, context, start, end, filters.author, session)
    except GPConnectError as error:
        audit.record(
            user=user,
            action="list_documents",
            outcome="failure",
            nhs_number=context.nhs_number,
            context_id=context.id,
            trace_id=error.trace_id or "",
            detail=f"document list: {audit.described(error)}",
        )
        raise

    documents = search.documents
    letters_only = roles.letters_only(user)
    if letters_only:
        documents = tuple(d for d in documents if _is_letter(d))
    has_not_for_patient = any(d.not_for_patient_disclosure for d in documents)
    from viewer.services import prefetch  # it imports this module

    prefetch.prefetch_requested(
        user=user, context=context, documents=documents, session_key=session.session_key or ""
    )
    if filters.keyword:
        documents = tuple(d for d in documents if _matches(d, filters.keyword))
    ordered = _sorted(documents, filters.sort, filters.direction)
    total = len(ordered)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    page = min(filters.page, pages)
    first = (page - 1) * PAGE_SIZE
    shown = ordered[first : first + PAGE_SIZE]
    current = replace(filters, page=page)

    audit.record(
        user=user,
        action="list_documents",
        outcome="success",
        nhs_number=context.nhs_number,
        context_id=context.id,
        trace_id=search.trace_id,
        detail=(
            f"document list page {page} of {pages} ({total} documents"
            f"{'; from a list fetched ' + search.retrieved_at.isoformat() if from_cache else ''})"
        ),
    )
    rows = [
        DocumentRow.of(
            d,
            key=document_key(context.id, d.id),
            max_bytes=max_document_bytes(),
            letter=_is_letter(d),
        )
        for d in shown
    ]
    statuses = prefetch.statuses(user=user, context_id=context.id, keys=[r.key for r in rows])
    rows = [replace(r, prefetch=statuses[r.key]) if r.key in statuses else r for r in rows]
    return DocumentsPage(
        rows=rows,
        total=total,
        page=page,
        pages=pages,
        start=first + 1 if total else 0,
        end=first + len(shown),
        filters=current,
        filter_description=current.description(today),
        headers=_headers(current),
        page_links=_page_links(current, pages),
        previous_query=current.query(page=page - 1) if page > 1 else None,
        next_query=current.query(page=page + 1) if page < pages else None,
        author_options=_author_options(context, start, end, search, filters.author),
        has_not_for_patient=has_not_for_patient,
        letters_only=letters_only,
        trace_id=search.trace_id,
        retrieved_at=search.retrieved_at,
        clear_query=DocumentFilters(sort=current.sort, direction=current.direction).query(),
    )


def _headers(filters: DocumentFilters) -> list[SortHeader]:
    headers = []
    for key, label in SORT_COLUMNS.items():
        if key == filters.sort:
            aria = "ascending" if filters.direction == "asc" else "descending"
            flipped = "desc" if filters.direction == "asc" else "asc"
            query = filters.query(sort=key, direction=flipped, page=1)
        else:
            aria = "none"
            # Dates read newest first; words A to Z.
            first = "desc" if key in ("created", "indexed") else "asc"
            query = filters.query(sort=key, direction=first, page=1)
        headers.append(SortHeader(key, label, aria, query))
    return headers


def _page_links(filters: DocumentFilters, pages: int) -> list[PageLink]:
    """Link the first and last pages and two either side of this one; mark the gaps."""
    if pages <= 1:
        return []
    page = filters.page
    wanted = sorted(n for n in {1, pages, *range(page - 2, page + 3)} if 1 <= n <= pages)
    return [
        PageLink(n, filters.query(page=n), n == page, gap_before=i > 0 and n - wanted[i - 1] > 1)
        for i, n in enumerate(wanted)
    ]


def _author_options(
    context: PatientContext,
    start: date | None,
    end: date | None,
    search: _Search,
    author: str,
) -> list[tuple[str, str]]:
    """Return (ODS, name) of the authoring organisations, from the unfiltered list if known."""
    documents = search.documents
    if author:
        unfiltered = cache.get(_cache_key(context.user_id, context.id, start, end, ""))
        if isinstance(unfiltered, _Search):
            documents = unfiltered.documents
    options = {
        d.author_organisation_ods: d.author_organisation or d.author_organisation_ods
        for d in documents
        if d.author_organisation_ods
    }
    if author and author not in options:
        options[author] = author
    return sorted(options.items(), key=lambda item: item[1].casefold())


# Documents linked from the structured record --------------------------------------------

# What the List warning codes mean for the person reading the list (SPEC §2).
LIST_WARNINGS: dict[str, str] = {
    "confidential-items": "Some items are confidential and are not shown.",
    "data-in-transit": (
        "Some of the patient's record is being transferred from a previous practice "
        "and is not shown yet."
    ),
    "data-awaiting-filing": "Some documents are waiting to be filed by the practice.",
}


@dataclass(frozen=True)
class LinkedFrom:
    """One place in the structured record that refers to a document."""

    kind: str  # "consultation" or "problem"
    label: str  # the consultation's title or the problem's name
    when: str  # the consultation's date ("" for a problem)
    when_iso: str


@dataclass(frozen=True)
class LinkedRow:
    document: DocumentRow
    links: tuple[LinkedFrom, ...]


@dataclass(frozen=True)
class LinkedDocumentsPage:
    """The documents that consultations and problems link to, most recent link first."""

    rows: list[LinkedRow]
    warnings: list[str]
    letters_only: bool
    trace_id: str
    retrieved_at: datetime

    @property
    def showing(self) -> str:
        noun = "document" if len(self.rows) == 1 else "documents"
        return f"{len(self.rows)} {noun} linked from consultations and problems"


@dataclass(frozen=True)
class _Linked:
    documents: tuple[LinkedDocument, ...]
    warnings: tuple[str, ...]
    trace_id: str
    retrieved_at: datetime


def _linked_cache_key(user_id: int, context_id: str) -> str:
    return f"viewer:linked:{user_id}:{context_id}"


def _structured_search(user: UserLike, context: PatientContext, session: SessionBase) -> _Linked:
    """Return the structured record's linked documents, reusing a recent answer."""
    key = _linked_cache_key(context.user_id, context.id)
    cached = cache.get(key)
    if isinstance(cached, _Linked):
        return cached
    _, sds = _spine(session, http_client())
    try:
        # Each capability has its own endpoint at the practice (SPEC §4.6).
        endpoint = sds.provider_endpoint(context.practice_ods, Interactions.STRUCTURED_RECORD)
    finally:
        session[SDS_SESSION_KEY] = sds.cache.to_dict()
    result = _client(user, endpoint).structured_documents(context.nhs_number)
    linked = _Linked(result.documents, result.warnings, result.trace_id, timezone.now())
    _cache_put(session, key, linked)
    return linked


def _links_of(linked: LinkedDocument) -> tuple[LinkedFrom, ...]:
    consultations = sorted(linked.consultations, key=lambda c: _sort_key_date(c.date), reverse=True)
    links = [
        LinkedFrom(
            "consultation",
            c.title or "Consultation",
            short_date(as_date(c.date)),
            d.isoformat() if (d := as_date(c.date)) else "",
        )
        for c in consultations
    ]
    links += [LinkedFrom("problem", p.name or "Problem", "", "") for p in linked.problems]
    return tuple(links)


def _sort_key_date(value: datetime | date | None) -> date:
    return as_date(value) or date.min


def linked_documents(
    *, user: UserLike, context_id: str, session: SessionBase
) -> LinkedDocumentsPage:
    """Return the documents the patient's consultations and problems link to; audits it.

    They come from Access Record Structured (its own SDS endpoint), and open on the same
    document page as the Access Document list. Receptionists see letters only.
    """
    context = patient_context_get(user=user, context_id=context_id, session=session)
    try:
        linked = _structured_search(user, context, session)
    except GPConnectError as error:
        audit.record(
            user=user,
            action="list_documents",
            outcome="failure",
            nhs_number=context.nhs_number,
            context_id=context.id,
            trace_id=error.trace_id or "",
            detail=f"linked documents: {audit.described(error)}",
        )
        raise
    letters_only = roles.letters_only(user)
    entries = [d for d in linked.documents if not letters_only or _is_letter(d.document)]

    def latest_link(entry: LinkedDocument) -> tuple[date, date]:
        consulted = max((_sort_key_date(c.date) for c in entry.consultations), default=date.min)
        return consulted, _sort_key_date(entry.document.created)

    entries.sort(key=latest_link, reverse=True)
    audit.record(
        user=user,
        action="list_documents",
        outcome="success",
        nhs_number=context.nhs_number,
        context_id=context.id,
        trace_id=linked.trace_id,
        detail=f"linked documents from the structured record ({len(entries)} documents)",
    )
    max_bytes = max_document_bytes()
    return LinkedDocumentsPage(
        rows=[
            LinkedRow(
                DocumentRow.of(
                    e.document, key=document_key(context.id, e.document.id), max_bytes=max_bytes
                ),
                _links_of(e),
            )
            for e in entries
        ],
        warnings=[LIST_WARNINGS.get(code, code) for code in linked.warnings],
        letters_only=letters_only,
        trace_id=linked.trace_id,
        retrieved_at=linked.retrieved_at,
    )


# One document: its page and its bytes ------------------------------------------------------

# What a browser may show inline, with a CSP sandbox: never HTML, SVG or XML (UX-SECURITY §3).
PREVIEWABLE_TYPES: dict[str, str] = {
    "application/pdf": "pdf",
    "image/png": "image",
    "image/jpeg": "image",
    "image/gif": "image",
    "text/plain": "text",
    # The browser's own player; formats it cannot play (audio/x-au, video/mpeg) are not here.
    "audio/wav": "audio",
    "audio/x-wav": "audio",
    "audio/wave": "audio",
    "audio/mpeg": "audio",
    "audio/ogg": "audio",
    "audio/webm": "audio",
    "video/mp4": "video",
    "video/webm": "video",
    "video/ogg": "video",
}

_EXTENSIONS: dict[str, str] = {
    "application/pdf": ".pdf",
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "image/tiff": ".tif",
    "image/bmp": ".bmp",
    "text/plain": ".txt",
    "text/html": ".html",
    "text/rtf": ".rtf",
    "application/rtf": ".rtf",
    "text/richtext": ".rtx",
    "application/msword": ".doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/xml": ".xml",
    "text/xml": ".xml",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/x-au": ".au",
    "audio/basic": ".au",
    "video/mpeg": ".mpg",
    "application/octet-stream": ".bin",
}

FILENAME_STEM_LIMIT = 100
# `type/subtype` only: anything else from the provider is served as opaque bytes.
_MIME_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")
# Path separators, quotes and the characters Windows forbids in file names.
_UNSAFE_FILENAME = re.compile(r"[\\/:*?\"'`<>|]")

PLACEHOLDER_MESSAGE = (
    "The GP practice has listed this document but cannot send it through GP Connect. "
    "Contact the practice if you need it."
)


class DocumentUnavailable(Exception):
    """The document is listed but will not be fetched: a placeholder or over the size limit.

    It has the attributes of `gpconnect.GPConnectError` that the error panel shows.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason  # placeholder or too_large
        self.trace_id: str | None = None
        self.retryable = False


@dataclass(frozen=True)
class DocumentView:
    """What the document page shows: the metadata, and what may be done with the bytes."""

    context: PatientContext
    details: DocumentDetails
    retrievable: bool  # the provider gave a URL (not a placeholder)
    too_large: bool  # over GPCONNECT_MAX_DOCUMENT_MB: never fetched
    preview: str  # "pdf", "image", "text" or "" (no inline preview)
    not_for_patient: bool
    can_download: bool
    max_document_mb: int
    can_print: bool = False

    @property
    def fetchable(self) -> bool:
        return self.retrievable and not self.too_large

    @property
    def conversion(self) -> str:
        """How the server converts it for preview ("pages", "pdf", "html", "text"), or ""."""
        from viewer.services.previews import conversion_kind  # it imports this module

        return conversion_kind(self.details.content_type)

    @property
    def printable(self) -> bool:
        """Whether Print makes a PDF of it (printing.py): fetchable, in a format it prints."""
        from viewer.services.printing import print_kind

        return self.fetchable and bool(print_kind(self.details.content_type))


class DocumentStream:
    """An open retrieval: iterate it once for the bytes; `close()` ends it early.

    Django's StreamingHttpResponse calls `close()` when the response is finished or
    abandoned, so the provider's connection is released either way.
    """

    def __init__(
        self, *, content_type: str, filename: str, size: int | None, chunks: Iterator[bytes]
    ) -> None:
        self.content_type = content_type
        self.filename = filename
        self.size = size
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


def max_document_bytes() -> int:
    return int(settings.GPCONNECT_MAX_DOCUMENT_MB) * 1024 * 1024


def base_content_type(content_type: str) -> str:
    """Return `type/subtype` in lower case, or application/octet-stream if malformed."""
    base = content_type.split(";")[0].strip().lower()
    return base if _MIME_TYPE.match(base) else "application/octet-stream"


def preview_kind(content_type: str) -> str:
    return PREVIEWABLE_TYPES.get(base_content_type(content_type), "")


def sniffed_content_type(declared: str, first_bytes: bytes) -> str:
    """Return the declared type, or for application/octet-stream the one the bytes show.

    Only the magic numbers `filetype` knows (PDF, images, Office, archives...) are
    recognised; text and HTML are not guessed, so nothing becomes HTML by sniffing.
    """
    declared = base_content_type(declared)
    if declared != "application/octet-stream" or not first_bytes:
        return declared
    guessed = filetype.guess_mime(first_bytes[:8192])
    return base_content_type(guessed) if guessed else declared


def document_filename(document: DocumentSummary, *, content_type: str | None = None) -> str:
    """Return `YYYY-MM-DD <title or type>.<ext>`, safe to offer as a file name anywhere.

    `content_type` overrides the document's own (when the bytes showed the real type).
    """
    text = strip_tags(document.title or "") or (document.type.display if document.type else "")
    text = unicodedata.normalize("NFC", text)
    text = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)
    text = _UNSAFE_FILENAME.sub(" ", text)
    text = re.sub(r"\.{2,}", ".", text)
    text = " ".join(text.split()).strip(" .")[:FILENAME_STEM_LIMIT].strip(" .") or "document"
    day = as_date(document.created or document.indexed)
    stem = f"{day.isoformat()} {text}" if day else text
    return stem + extension_for(content_type or document.content_type)


def extension_for(content_type: str) -> str:
    base = base_content_type(content_type)
    return _EXTENSIONS.get(base) or mimetypes.guess_extension(base) or ".bin"


def document_key(context_id: str, document_id: str) -> str:
    """Return the opaque id a document has in URLs within one patient context.

    Providers' document ids can contain the NHS number (and URLs reach browser history
    and logs), so URLs carry this keyed hash instead; it means nothing outside the context.
    """
    return salted_hmac("viewer.document", f"{context_id}:{document_id}").hexdigest()[:32]


def _documents_endpoint(context: PatientContext) -> ProviderEndpoint:
    return ProviderEndpoint(
        service_root=context.service_root,
        asid=context.asid,
        ods_code=context.practice_ods,
        capability=Interactions.DOCUMENTS_SEARCH.capability,
    )


def _document_of(
    *, user: UserLike, context_id: str, document_id: str, session: SessionBase
) -> tuple[PatientContext, DocumentSummary]:
    """Return the context and the document only if both are this user's; otherwise 404."""
    context = patient_context_get(user=user, context_id=context_id, session=session)
    return context, _document_in(
        user=user, context=context, document_id=document_id, session=session
    )


def _document_in(
    *, user: UserLike, context: PatientContext, document_id: str, session: SessionBase
) -> DocumentSummary:
    """Return the document only if it is in this user's patient context; otherwise 404.

    `document_id` is the opaque id from the URL (`document_key`), not the provider's.
    `context` must come from `patient_context_get`.

    The list is the context's unfiltered one (cached for sorting and paging); a document
    not in it, or one a receptionist may not see, is audited as "access_denied".
    """
    search, _ = _search(user, context, None, None, "", session)
    document = next(
        (d for d in search.documents if document_key(context.id, d.id) == document_id), None
    )
    if document is None:
        # A document the structured record links to, which the practice's document search
        # did not list: only one this session has been shown.
        linked = cache.get(_linked_cache_key(context.user_id, context.id))
        if isinstance(linked, _Linked):
            document = next(
                (
                    e.document
                    for e in linked.documents
                    if document_key(context.id, e.document.id) == document_id
                ),
                None,
            )
    if document is None or (roles.letters_only(user) and not _is_letter(document)):
        audit.record(
            user=user,
            action="access_denied",
            outcome="denied",
            nhs_number=context.nhs_number,
            context_id=context.id,
            document_id=document_id[:200],
            trace_id=search.trace_id,
            detail="document not in this patient context's list for this user",
        )
        raise Http404("No such document for this patient")
    return document


def document_get(
    *, user: UserLike, context_id: str, document_id: str, session: SessionBase
) -> DocumentView:
    """Return one document's metadata and what may be done with it; audits "view".

    Raises Http404 for a document outside this user's patient context, and
    `gpconnect.GPConnectError` if the practice's list cannot be fetched.
    """
    context, document = _document_of(
        user=user, context_id=context_id, document_id=document_id, session=session
    )
    too_large = document.size is not None and document.size > max_document_bytes()
    audit.record(
        user=user,
        action="view",
        outcome="success",
        nhs_number=context.nhs_number,
        context_id=context.id,
        document_id=document.id,
        detail="document page (metadata)",
    )
    return DocumentView(
        context=context,
        details=DocumentDetails.of(document, key=document_key(context.id, document.id)),
        retrievable=document.retrievable,
        too_large=too_large,
        preview=preview_kind(document.content_type),
        not_for_patient=document.not_for_patient_disclosure,
        can_download=roles.can(user, "download"),
        max_document_mb=int(settings.GPCONNECT_MAX_DOCUMENT_MB),
        can_print=roles.can(user, "print"),
    )


def document_stream(
    *,
    user: UserLike,
    context_id: str,
    document_id: str,
    session: SessionBase,
    inline: bool = False,
) -> DocumentStream:
    """Open the document at the practice and return its bytes as a stream.

    `inline` is the preview: only PREVIEWABLE_TYPES (else Http404), audited as "view";
    otherwise a download, which the user's role must allow, audited as "download".
    Placeholders and documents over the size limit are never fetched
    (`DocumentUnavailable`). A provider failure before the first byte raises its
    `GPConnectError`; one part way through is logged, audited and re-raised from the
    iteration, so the browser sees a failed download rather than a short file.

    A document prefetched for this user in this session is served from the encrypted
    cache without asking the practice, or even reading the cached list.
    """
    context = patient_context_get(user=user, context_id=context_id, session=session)
    prefetched = _prefetched_stream(
        user=user, context=context, key=document_id, session=session, inline=inline
    )
    if prefetched is not None:
        return prefetched
    document = _document_in(user=user, context=context, document_id=document_id, session=session)
    what = "preview" if inline else "download"
    note = _stream_audit(user, context, document.id, inline=inline)

    content_type = base_content_type(document.content_type)
    if inline and content_type not in PREVIEWABLE_TYPES:
        note("denied", f"{content_type} is not previewed inline")
        raise Http404("This format cannot be previewed")
    if not inline and not roles.can(user, "download"):
        note("denied", "the user's role may not download documents")
        raise PermissionDenied
    if document.url is None:
        note("denied", "placeholder: the practice cannot send this document")
        reason = document.unavailable_reason
        message = PLACEHOLDER_MESSAGE + (f" The practice says: “{reason}”." if reason else "")
        raise DocumentUnavailable(message, reason="placeholder")
    if document.size is not None and document.size > max_document_bytes():
        note("denied", f"over the {settings.GPCONNECT_MAX_DOCUMENT_MB} MB limit: not fetched")
        raise DocumentUnavailable(
            f"This document is {file_size(document.size)}. GP Connect sends documents of up "
            f"to {settings.GPCONNECT_MAX_DOCUMENT_MB} MB only, so it was not requested. "
            "Contact the practice if you need it.",
            reason="too_large",
        )

    stack = ExitStack()
    try:
        download = stack.enter_context(
            _client(user, _documents_endpoint(context)).open_binary(document.url)
        )
        chunks = iter(download)
        # Read the first chunk here, so a reply that is wrong from the start is an error
        # page rather than a failed download; it also shows the real type of a document
        # the practice calls application/octet-stream.
        first = next(chunks, b"")
    except GPConnectError as error:
        stack.close()
        note("failure", audit.described(error), error.trace_id or "")
        raise
    except BaseException:
        stack.close()
        raise

    served_type = content_type if inline else sniffed_content_type(content_type, first)
    return DocumentStream(
        content_type=served_type,
        filename=document_filename(document, content_type=served_type),
        size=document.size,
        chunks=_Relay(
            prepended(first, coalesced(chunks)),
            note=note,
            what=what,
            source="live from the practice",
            trace_id=download.trace_id,
            resources=stack,
        ),
    )


def _stream_audit(
    user: UserLike, context: PatientContext, document_id: str, *, inline: bool
) -> Callable[..., None]:
    """Return `note(outcome, detail, trace_id="")`, which audits this preview or download."""
    action, what = ("view", "preview") if inline else ("download", "download")
    # The last audit row is written as the body finishes streaming, after the request's
    # middleware has reset its id: keep the id now.
    request_id = current_request_id() or ""

    def note(outcome: str, detail: str, trace_id: str = "") -> None:
        audit.record(
            user=user,
            action=action,
            outcome=outcome,
            nhs_number=context.nhs_number,
            context_id=context.id,
            document_id=document_id,
            trace_id=trace_id,
            detail=f"{what}: {detail}",
            request_id=request_id,
        )

    return note


def _prefetched_stream(
    *,
    user: UserLike,
    context: PatientContext,
    key: str,
    session: SessionBase,
    inline: bool,
) -> DocumentStream | None:
    """Return the document from the prefetch cache if it is ready and this user may have it.

    The row was made from this user's own list in this session (a letters-only role's
    rows are letters), so it is enough to check the role's permission now. Anything else
    (not prefetched, not ready, not allowed) returns None and takes the normal path, which
    refuses and audits properly.
    """
    from viewer.services import prefetch  # it imports this module

    ready = prefetch.open_ready(
        user=user, context=context, key=key, session_key=session.session_key or ""
    )
    if ready is None:
        return None
    row = ready.row
    allowed = roles.can(user, "view" if inline else "download")
    if inline:
        allowed = allowed and row.content_type in PREVIEWABLE_TYPES
    if not allowed or (roles.letters_only(user) and not row.is_letter):
        ready.chunks.close()
        return None
    filename = row.filename
    stem, _, _ = filename.rpartition(".")
    return DocumentStream(
        content_type=row.content_type,
        filename=f"{stem or filename}{extension_for(row.content_type)}",
        size=row.bytes_fetched,
        chunks=_Relay(
            ready.chunks,
            note=_stream_audit(user, context, row.document_id, inline=inline),
            what="preview" if inline else "download",
            source="from the encrypted prefetch cache",
            trace_id=row.trace_id,
        ),
    )


def cache_ttl() -> timedelta:
    """How long a prefetched document, preview or print stays in the encrypted cache."""
    return timedelta(minutes=int(settings.PREFETCH_TTL_MINUTES))


def session_alive(session_key: str) -> bool:
    """Whether the session is still live (not expired, not deleted), in any session engine."""
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    store.load()  # an expired or deleted session comes back without its key
    return store.session_key is not None


def prepended(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    """The chunks again, with the first one (read ahead to check the reply) put back."""
    if first:
        yield first
    yield from rest


# What the server writes at a time: several of the provider's 64 KiB reads (48 KiB once
# decoded), so the server and the browser each handle a quarter as many chunks. Bytes are
# never held longer than RELAY_HOLD_SECONDS, so a slow practice's document still moves.
RELAY_CHUNK_BYTES = 192 * 1024
RELAY_HOLD_SECONDS = 0.5


def coalesced(
    chunks: Iterator[bytes],
    size: int = RELAY_CHUNK_BYTES,
    hold_seconds: float = RELAY_HOLD_SECONDS,
) -> Iterator[bytes]:
    """The same bytes in pieces of at least `size`, except the last and any held too long.

    What arrived is written once it reaches `size`, or when the next piece arrives more
    than `hold_seconds` after the first held one: the gap between writes is then never
    much more than the provider's own gap between reads.
    """
    held: list[bytes] = []
    length = 0
    since = 0.0
    for chunk in chunks:
        if not held:
            since = time.monotonic()
        held.append(chunk)
        length += len(chunk)
        if length >= size or time.monotonic() - since > hold_seconds:
            yield held[0] if len(held) == 1 else b"".join(held)
            held, length = [], 0
    if held:
        yield b"".join(held)


class _Relay(Iterator[bytes]):
    """A document's chunks on their way to the browser, and the download's audit.

    The download is audited as sent once its last chunk has been read, before the server
    writes the body's terminating chunk: if that audit row cannot be written, the response
    is aborted and the browser sees a failed download, never a document nobody audited.
    A failure part way (the practice stops, a blob does not decrypt, anything unexpected)
    is logged, audited and re-raised, so the browser sees a failed download rather than a
    short file. One the browser abandoned is audited when the server closes it. The
    source's resources (the practice's open response, a blob) are released as soon as the
    last chunk has been read, or on failure, or on close.
    """

    def __init__(
        self,
        chunks: Iterator[bytes],
        *,
        note: Callable[..., None],
        what: str,
        source: str,
        trace_id: str,
        resources: ExitStack | None = None,
    ) -> None:
        self._chunks = chunks
        self._note = note
        self._what = what
        self._source = source
        self._trace_id = trace_id
        self._resources = resources
        self._sent = 0
        # "unread" (closed so, the server sent no body: nothing to audit), "sending", then
        # "done" (audited as sent in full or as failed) or "closed".
        self._state = "unread"

    def __next__(self) -> bytes:
        if self._state == "done":
            raise StopIteration
        self._state = "sending"
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self._state = "done"
            self._release()
            self._note("success", f"{self._sent} bytes sent {self._source}", self._trace_id)
            raise
        except (GPConnectError, BlobUnreadable) as error:
            self._fail(error, getattr(error, "message", str(error)))
            logger.warning(
                "Document %s stopped part way (%d bytes sent, %s): %s; trace ID %s",
                self._what,
                self._sent,
                self._source,
                type(error).__name__,
                self._trace_id,
            )
            raise
        except BaseException as error:
            self._fail(error, "unexpected error")
            logger.exception(
                "Document %s failed part way (%d bytes sent, %s); trace ID %s",
                self._what,
                self._sent,
                self._source,
                self._trace_id,
            )
            raise
        self._sent += len(chunk)
        return chunk

    def _fail(self, error: BaseException, message: str) -> None:
        self._state = "done"
        try:
            self._release()
        finally:
            self._note(
                "failure",
                f"stopped part way after {self._sent} bytes ({self._source}): "
                f"{type(error).__name__}: {message}",
                self._trace_id,
            )

    def close(self) -> None:
        state, self._state = self._state, "closed"
        try:
            if state == "sending":
                self._note(
                    "failure",
                    f"abandoned by the browser after {self._sent} bytes ({self._source})",
                    self._trace_id,
                )
        finally:
            self._release()

    def _release(self) -> None:
        try:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        finally:
            if self._resources is not None:
                self._resources.close()


def prefetch_statuses(
    *, user: UserLike, context_id: str, session: SessionBase, keys: Sequence[str]
) -> list[Any]:
    """Return the prefetch status of each of these documents, for the rows' poll.

    Raises Http404 for a context outside this user's session, like the patient page.
    """
    from viewer.services import prefetch

    context = patient_context_get(user=user, context_id=context_id, session=session)
    found = prefetch.statuses(user=user, context_id=context.id, keys=keys[:PAGE_SIZE])
    return [found[key] for key in keys[:PAGE_SIZE] if key in found]
