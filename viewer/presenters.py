"""Display-ready values for the templates, so they only ever test for presence.

Dates in tables and the banner use the CUI short form (`12-Mar-2024`), sizes read like
`1.2 MB`, NHS numbers `999 123 4567` (UX-SECURITY.md §1.3, §1.4).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from gpconnect import DocumentSummary, errors, nhs_number
from viewer.context import PatientContext

_FORMAT_LABELS = {
    "application/pdf": "PDF",
    "image/jpeg": "JPEG image",
    "image/png": "PNG image",
    "image/gif": "GIF image",
    "image/tiff": "TIFF image",
    "image/bmp": "BMP image",
    "text/plain": "Text",
    "text/html": "HTML",
    "text/rtf": "Rich text",
    "application/rtf": "Rich text",
    "text/richtext": "Rich text",
    "application/msword": "Word",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "Word",
    "application/xml": "XML",
    "text/xml": "XML",
    "audio/x-au": "Audio",
    "audio/basic": "Audio",
    "video/mpeg": "Video",
}

_GENDERS = {"male": "Male", "female": "Female", "other": "Other"}


def as_date(value: datetime | date | None) -> date | None:
    return value.date() if isinstance(value, datetime) else value


def short_date(value: datetime | date | None) -> str:
    """Return `12-Mar-2024` (CUI short date), or "" when there is no date."""
    day = as_date(value)
    return day.strftime("%d-%b-%Y") if day else ""


def age_in_years(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def file_size(size: int | None) -> str:
    """Return `1.2 MB`, `340 KB` or `512 bytes`; "" when the provider gave no size."""
    if size is None:
        return ""
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def format_label(content_type: str) -> str:
    """Return a reader's name for a MIME type ("PDF", "Word"); unknown types as given."""
    base = content_type.split(";")[0].strip().lower()
    return _FORMAT_LABELS.get(base, base or "Unknown format")


def gender_label(gender: str | None) -> str:
    return _GENDERS.get((gender or "").lower(), "Not known")


@dataclass(frozen=True)
class DocumentRow:
    """One table row: every cell already formatted."""

    id: str
    created: str
    created_iso: str
    indexed: str
    indexed_iso: str
    type: str
    title: str
    author_organisation: str
    author_practitioner: str
    external: bool
    format: str
    size: str
    retrievable: bool
    unavailable_reason: str
    too_large: bool
    not_for_patient: bool
    key: str = ""  # the opaque id in the document page's URL (services.document_key)
    # The prefetch's status (a services.prefetch.PrefetchStatus), when there is one.
    prefetch: Any = None
    letter: bool = False  # a letter (services._is_letter): "select all letters" picks it

    @classmethod
    def of(
        cls, document: DocumentSummary, *, key: str, max_bytes: int, letter: bool = False
    ) -> DocumentRow:
        """Format one document; `max_bytes` is the retrieval limit (GPCONNECT_MAX_DOCUMENT_MB)."""
        created, indexed = as_date(document.created), as_date(document.indexed)
        too_large = document.size is not None and document.size > max_bytes
        return cls(
            id=document.id,
            created=short_date(created),
            created_iso=created.isoformat() if created else "",
            indexed=short_date(indexed),
            indexed_iso=indexed.isoformat() if indexed else "",
            type=document.type.display if document.type else "",
            title=document.title,
            author_organisation=document.author_organisation or "",
            author_practitioner=document.author_practitioner or "",
            external=document.internal is False,
            format=format_label(document.content_type),
            size=file_size(document.size),
            retrievable=document.retrievable and not too_large,
            unavailable_reason=document.unavailable_reason
            or (
                f"Over {max_bytes / (1024 * 1024):g} MB: too large to retrieve through GP Connect."
                if too_large
                else ""
            ),
            too_large=too_large,
            not_for_patient=document.not_for_patient_disclosure,
            key=key,
            letter=letter,
        )


@dataclass(frozen=True)
class DocumentDetails:
    """One document's metadata for the document page's summary list: every value a string."""

    id: str
    title: str
    type: str
    created: str
    created_iso: str
    indexed: str
    indexed_iso: str
    author_organisation: str
    author_practitioner: str
    custodian: str
    origin: str
    format: str
    content_type: str
    size: str
    identifier: str
    unavailable_reason: str
    not_for_patient: bool
    linked_to_consultation: bool
    key: str = ""

    @classmethod
    def of(cls, document: DocumentSummary, *, key: str = "") -> DocumentDetails:
        created, indexed = as_date(document.created), as_date(document.indexed)
        author = _with_ods(document.author_organisation, document.author_organisation_ods)
        if document.internal is True:
            origin = "Created by this practice"
        elif document.internal is False:
            origin = f"Received from {document.author_organisation or 'another organisation'}"
        else:
            origin = ""
        return cls(
            id=document.id,
            title=document.title or "Untitled document",
            type=document.type.display if document.type else "",
            created=short_date(created),
            created_iso=created.isoformat() if created else "",
            indexed=short_date(indexed),
            indexed_iso=indexed.isoformat() if indexed else "",
            author_organisation=author,
            author_practitioner=document.author_practitioner or "",
            custodian=_with_ods(document.custodian, document.custodian_ods),
            origin=origin,
            format=format_label(document.content_type),
            content_type=document.content_type,
            size=file_size(document.size),
            identifier=document.identifier or "",
            unavailable_reason=document.unavailable_reason or "",
            not_for_patient=document.not_for_patient_disclosure,
            linked_to_consultation=document.encounter_reference is not None,
            key=key,
        )


def _with_ods(name: str | None, ods: str | None) -> str:
    """Return "Leeds Teaching Hospitals (RR8)", or whichever part is known."""
    if name and ods:
        return f"{name} ({ods})"
    return name or ods or ""


@dataclass(frozen=True)
class PatientBanner:
    """The CUI patient banner: FAMILY, Given (Title) · Born · Gender · NHS No."""

    name: str
    born: str
    age: str
    gender: str
    nhs_number: str
    practice_ods: str
    deceased_on: str
    differences: tuple[str, ...]

    @classmethod
    def of(cls, context: PatientContext, *, today: date) -> PatientBanner:
        pds = context.pds
        born = pds.birth_date
        end = context.deceased_at or today
        return cls(
            name=pds.name.display or "Not known",
            born=short_date(born) or "Not known",
            age=f"{age_in_years(born, end)}y" if born else "",
            gender=gender_label(pds.gender),
            nhs_number=nhs_number.format(context.nhs_number),
            practice_ods=context.practice_ods,
            deceased_on=short_date(context.deceased_at),
            differences=context.differences,
        )

    @property
    def differences_text(self) -> str:
        """Return "family name and date of birth" for the warning callout."""
        items = list(self.differences)
        if len(items) <= 1:
            return "".join(items)
        return f"{', '.join(items[:-1])} and {items[-1]}"


_ERROR_TITLES: tuple[tuple[type[Exception], str], ...] = (
    (errors.NoPatientConsent, "The patient has not agreed to share their record"),
    (errors.AccessDenied, "This GP practice does not share documents"),
    (errors.EndpointNotFound, "This GP practice is not set up for GP Connect"),
    (errors.PatientNotFound, "No record was found"),
    (errors.Forbidden, "The GP practice refused the request"),
    (errors.ProviderUnavailable, "The GP practice's system is not responding"),
    (errors.SpineProxyError, "The NHS Spine refused the request"),
    (errors.InvalidResponse, "The GP practice's system sent a reply that could not be read"),
)

_LOOKUP_TITLES = {
    "placeholder": "This document cannot be retrieved",
    "too_large": "This document is too large to retrieve",
    "restricted": "This patient's record cannot be shown",
    "no_practice": "The patient has no registered GP practice",
    "not_registered": "The patient's record is not available at their GP practice",
}


@dataclass(frozen=True)
class ErrorPanel:
    """What the error panel says: a heading, what happened, whether to try again, the trace ID."""

    title: str
    message: str
    retryable: bool
    trace_id: str

    @classmethod
    def of(cls, error: Exception) -> ErrorPanel:
        reason = getattr(error, "reason", None)
        title = _LOOKUP_TITLES.get(reason or "", "")
        if not title:
            title = next(
                (text for kind, text in _ERROR_TITLES if isinstance(error, kind)),
                "There was a problem getting the patient's documents",
            )
        return cls(
            title=title,
            message=getattr(error, "message", "") or str(error),
            retryable=bool(getattr(error, "retryable", False)),
            trace_id=getattr(error, "trace_id", None) or "",
        )
