"""The viewer's persistent state: who a user is to GP Connect, and the audit trail."""

from __future__ import annotations

import uuid
from typing import Any, NoReturn

from django.conf import settings
from django.db import models
from django.utils import timezone

from gpconnect import nhs_number


class UserProfile(models.Model):
    """What the GP Connect JWT says about the person a request is made for.

    Filled from the smartcard identity (SDS) in production; `demo_users` makes synthetic ones.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile"
    )
    # The JWT's `sub` and practitioner id must be a FHIR id that never changes and reveals
    # nothing about the person, so neither the username nor the email will do.
    local_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    sds_user_id = models.CharField(
        "SDS user id", max_length=20, blank=True, help_text="Blank sends UNK."
    )
    sds_role_profile_id = models.CharField(
        "SDS role profile id", max_length=20, blank=True, help_text="Blank sends UNK."
    )
    title = models.CharField("title (prefix)", max_length=40, blank=True)
    given_names = models.CharField("given name(s)", max_length=150, blank=True)
    family_name = models.CharField(max_length=150)
    organisation_ods_code = models.CharField("organisation ODS code", max_length=10)
    organisation_name = models.CharField(max_length=200)

    class Meta:
        verbose_name = "user profile"

    def __str__(self) -> str:
        return " ".join(part for part in (self.title, self.given_names, self.family_name) if part)


class AuditAction(models.TextChoices):
    SEARCH = "search", "Patient search"
    PDS_TRACE = "pds_trace", "PDS trace"
    SDS_LOOKUP = "sds_lookup", "SDS lookup"
    FIND_PATIENT = "find_patient", "Find patient"
    LIST_DOCUMENTS = "list_documents", "Documents listed"
    VIEW = "view", "Document viewed"
    DOWNLOAD = "download", "Document downloaded"
    PRINT = "print", "Document printed"
    PREFETCH = "prefetch", "Document prefetched"
    BATCH_PRINT = "batch_print", "Documents printed together"
    SEARCH_SLOTS = "search_slots", "Free slots searched"
    BOOK = "book", "Appointment booked"
    AMEND = "amend", "Appointment amended"
    CANCEL = "cancel", "Appointment cancelled"
    REGISTER_PATIENT = "register_patient", "Patient registered temporarily"
    READ_APPOINTMENT = "read_appointment", "Appointment read"
    SIGN_IN = "sign_in", "Signed in"
    SIGN_IN_FAILED = "sign_in_failed", "Sign-in failed"
    SIGN_OUT = "sign_out", "Signed out"
    SESSION_EXPIRED = "session_expired", "Session expired"
    ACCESS_DENIED = "access_denied", "Access denied"
    AUDIT_SEARCH = "audit_search", "Audit trail searched"
    AUDIT_EXPORT = "audit_export", "Audit trail exported"


class AuditOutcome(models.TextChoices):
    SUCCESS = "success", "Success"
    FAILURE = "failure", "Failure"
    DENIED = "denied", "Denied"
    UNKNOWN = "unknown", "Unknown"  # e.g. a booking that timed out before the provider answered


class AuditEventImmutable(Exception):
    """Raised on any attempt to change or delete an audit event through the app."""


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    # Bulk operations skip Model.save() and delete(), so they must refuse as well.
    def update(self, **kwargs: Any) -> NoReturn:
        raise AuditEventImmutable("Audit events cannot be updated")

    def delete(self) -> NoReturn:
        raise AuditEventImmutable("Audit events cannot be deleted")


class AuditEvent(models.Model):
    """One row of the append-only audit trail; write it with `viewer.audit.record`.

    The id doubles as the sequence number. Who, role and organisation are copied, so the
    row says what was true at the time even after the user or profile changes.
    """

    when = models.DateTimeField(default=timezone.now, db_index=True)
    # PROTECT: a user with an audit trail cannot be deleted (deactivate them instead).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="audit_events",
    )
    username = models.CharField(max_length=150, db_index=True)
    role = models.CharField(max_length=40, blank=True)
    organisation_ods_code = models.CharField("organisation ODS code", max_length=10, blank=True)
    nhs_number = models.CharField("NHS number", max_length=10, blank=True, db_index=True)
    action = models.CharField(max_length=20, choices=AuditAction.choices)
    outcome = models.CharField(max_length=10, choices=AuditOutcome.choices)
    document_id = models.CharField(max_length=200, blank=True)
    context_id = models.CharField("patient context id", max_length=64, blank=True)
    trace_id = models.CharField("Ssp-TraceID", max_length=64, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    ip_address = models.GenericIPAddressField("IP address", null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    detail = models.TextField(blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-when", "-id"]
        # Only "view": nobody can even be granted add, change or delete.
        default_permissions = ("view",)

    def __str__(self) -> str:
        return f"{self.when:%Y-%m-%d %H:%M:%S} {self.username} {self.action} {self.outcome}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AuditEventImmutable("Audit events cannot be updated")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AuditEventImmutable("Audit events cannot be deleted")

    @property
    def nhs_number_display(self) -> str:
        """Return the NHS number as `999 123 4567`, or as stored if it is not valid."""
        if nhs_number.is_valid(self.nhs_number):
            return nhs_number.format(self.nhs_number)
        return self.nhs_number


class PrefetchState(models.TextChoices):
    QUEUED = "queued", "Queued"
    FETCHING = "fetching", "Fetching"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class PrefetchedDocument(models.Model):
    """A large document fetched ahead of the click, for one user in one patient context.

    The bytes live encrypted in the `prefetch` storage under `blob_name`; this row says
    where, for whom, how far the fetch has gone and when it expires. The practice's
    endpoint is copied from the patient context, so the Celery task needs nothing from
    the user's session (which it cannot read).
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="prefetches"
    )
    session_key = models.CharField(max_length=64, db_index=True)
    context_id = models.CharField("patient context id", max_length=64)
    document_key = models.CharField(max_length=64)  # the opaque id URLs carry
    document_id = models.CharField(max_length=500)  # the provider's id (audit only)
    nhs_number = models.CharField("NHS number", max_length=10)
    practice_ods = models.CharField("practice ODS code", max_length=10)
    service_root = models.CharField(max_length=500)
    asid = models.CharField("ASID", max_length=20)
    url = models.CharField("Binary URL", max_length=2000)
    content_type = models.CharField(max_length=200)
    filename = models.CharField(max_length=300)  # as the download offers it
    # Whether the document is a letter, so a letters-only role is refused the others.
    is_letter = models.BooleanField(default=False)
    expected_size = models.BigIntegerField(null=True, blank=True)
    state = models.CharField(
        max_length=10, choices=PrefetchState.choices, default=PrefetchState.QUEUED
    )
    bytes_fetched = models.BigIntegerField(default=0)
    blob_name = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    failure = models.CharField(max_length=300, blank=True)
    trace_id = models.CharField("Ssp-TraceID", max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            # One prefetch per document at a time, however many requests ask for it.
            models.UniqueConstraint(
                fields=["user", "context_id", "document_key"], name="one_prefetch_per_document"
            )
        ]

    def __str__(self) -> str:
        return f"prefetch {self.pk} {self.state} {self.bytes_fetched} bytes"

    @property
    def progress_percent(self) -> int | None:
        if not self.expected_size:
            return None
        return min(100, self.bytes_fetched * 100 // self.expected_size)


class OrganisationType(models.TextChoices):
    """The codes of GP Connect's OrganisationType CodeSystem (SPEC §3.3)."""

    GP_PRACTICE = "gp-practice", "GP practice"
    URGENT_CARE = "urgent-care", "Urgent care"


class FederationPractice(models.Model):
    """A practice of the federation whose free slots receptionists may book (SPEC §3.6).

    The consumer keeps this list itself: neither the Spine nor providers publish a
    federation. Each practice's endpoints are still found in SDS, interaction by interaction.
    """

    ods_code = models.CharField("ODS code", max_length=10, unique=True)
    display_name = models.CharField(max_length=200)
    organisation_type = models.CharField(
        max_length=20, choices=OrganisationType.choices, default=OrganisationType.GP_PRACTICE
    )
    enabled = models.BooleanField(
        default=True, help_text="Only enabled practices are offered to receptionists."
    )

    class Meta:
        ordering = ["display_name"]
        verbose_name = "federation practice"

    def __str__(self) -> str:
        return f"{self.display_name} ({self.ods_code})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.ods_code = self.ods_code.strip().upper()
        super().save(*args, **kwargs)


class BookingState(models.TextChoices):
    PENDING = "pending", "Pending"  # the request is being made: nothing is known yet
    CONFIRMED = "confirmed", "Confirmed"  # the practice holds the appointment
    FAILED = "failed", "Failed"  # the practice does not hold it: nothing was booked
    UNKNOWN = "unknown", "Unknown"  # no answer, and not (yet) in the patient's list
    CANCELLED = "cancelled", "Cancelled"  # confirmed, then cancelled through this service


# A slot with one of these is being booked through this service: nobody may try it again.
BOOKING_IN_FLIGHT = (BookingState.PENDING, BookingState.UNKNOWN)


class Booking(models.Model):
    """One attempt to book a slot, keyed by the idempotency token of the form it came from.

    The row is written before the practice is called, so a second submission of the same
    form (a double click, a refresh) finds it instead of booking again, and a second form
    for the same slot (another tab, a colleague) is refused while this one is in flight.
    """

    token = models.UUIDField(unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="bookings"
    )
    state = models.CharField(
        max_length=10, choices=BookingState.choices, default=BookingState.PENDING
    )
    nhs_number = models.CharField("NHS number", max_length=10)
    patient_key = models.CharField("booking patient id", max_length=64)
    patient_logical_id = models.CharField("patient id at the practice", max_length=64, blank=True)
    practice_ods = models.CharField("practice ODS code", max_length=10)
    first_slot_id = models.CharField(max_length=64)
    slot_ids = models.JSONField(default=list)
    start = models.DateTimeField(null=True, blank=True)
    end = models.DateTimeField(null=True, blank=True)
    description = models.CharField(max_length=100)
    comment = models.CharField(max_length=500, blank=True)
    registered = models.BooleanField(
        default=False, help_text="The patient was registered temporarily at the practice first."
    )
    appointment_id = models.CharField(max_length=64, blank=True)
    appointment_version = models.CharField(max_length=20, blank=True)
    trace_id = models.CharField("Ssp-TraceID", max_length=64, blank=True)
    failure = models.CharField(max_length=500, blank=True)
    # Where, when, with whom: what the confirmation and the printed summary show.
    summary = models.JSONField(default=dict)
    # Until then nobody else may check or change an in-flight booking: the request booking
    # it holds it while it works (and extends it step by step); a check holds it briefly,
    # which also spaces the checks out.
    lease_until = models.DateTimeField(null=True, blank=True)
    # When POST /Appointment was sent. Never sent: nothing can have been booked.
    sent_at = models.DateTimeField(null=True, blank=True)
    # After a booking whose answer was lost: until then, "not in the patient's list" only
    # means "not yet" (the practice may still make it); after it, it means not booked.
    settle_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["practice_ods", "first_slot_id"],
                condition=models.Q(state__in=BOOKING_IN_FLIGHT),
                name="one_booking_in_flight_per_slot",
            )
        ]

    def __str__(self) -> str:
        return f"booking {self.token} {self.state} {self.practice_ods} {self.first_slot_id}"


class ConversionState(models.TextChoices):
    QUEUED = "queued", "Queued"
    CONVERTING = "converting", "Converting"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


CONVERSION_PENDING = (ConversionState.QUEUED, ConversionState.CONVERTING)


class ConvertedDocument(models.Model):
    """A preview the server made of a format browsers cannot show, for one user and context.

    `kind` says what was made: "pages" (PNG images, one blob each), "pdf" (from a word
    processor document), "html" (sanitised) or "text". The blobs are encrypted like
    prefetched documents and go with them: on expiry, at sign-out and when the session ends.
    The practice's endpoint is copied from the patient context for the Celery task.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversions"
    )
    session_key = models.CharField(max_length=64, db_index=True)
    context_id = models.CharField("patient context id", max_length=64)
    document_key = models.CharField(max_length=64)  # the opaque id URLs carry
    document_id = models.CharField(max_length=500)  # the provider's id (audit only)
    nhs_number = models.CharField("NHS number", max_length=10)
    practice_ods = models.CharField("practice ODS code", max_length=10)
    service_root = models.CharField(max_length=500)
    asid = models.CharField("ASID", max_length=20)
    url = models.CharField("Binary URL", max_length=2000)
    content_type = models.CharField(max_length=200)
    is_letter = models.BooleanField(default=False)
    kind = models.CharField(max_length=10)
    state = models.CharField(
        max_length=10, choices=ConversionState.choices, default=ConversionState.QUEUED
    )
    progress = models.PositiveSmallIntegerField(default=0)  # percent
    pages = models.PositiveIntegerField(default=0)
    output_type = models.CharField(max_length=100, blank=True)
    blob_names = models.JSONField(default=list)
    failure = models.CharField(max_length=300, blank=True)
    trace_id = models.CharField("Ssp-TraceID", max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "context_id", "document_key"], name="one_conversion_per_document"
            )
        ]

    def __str__(self) -> str:
        return f"conversion {self.pk} {self.kind} {self.state}"

    @property
    def pending(self) -> bool:
        return self.state in CONVERSION_PENDING


class PrintJob(models.Model):
    """One print: a PDF the server builds with provenance on every page, for one user.

    A batch has a cover sheet listing every document asked for, with the reason for any
    that could not be printed. `documents` holds what the task needs of each (no session);
    `results` what became of each. The PDF is an encrypted blob, purged like a prefetch.
    """

    token = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="print_jobs"
    )
    session_key = models.CharField(max_length=64, db_index=True)
    context_id = models.CharField("patient context id", max_length=64)
    nhs_number = models.CharField("NHS number", max_length=10)
    practice_ods = models.CharField("practice ODS code", max_length=10)
    service_root = models.CharField(max_length=500)
    asid = models.CharField("ASID", max_length=20)
    batch = models.BooleanField(default=False)
    provenance = models.JSONField(default=dict)  # patient, printed by, role and when
    documents = models.JSONField(default=list)
    results = models.JSONField(default=list)
    state = models.CharField(
        max_length=10, choices=ConversionState.choices, default=ConversionState.QUEUED
    )
    done = models.PositiveSmallIntegerField(default=0)
    pages = models.PositiveIntegerField(default=0)
    blob_name = models.CharField(max_length=200, blank=True)
    failure = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"print {self.token} {self.state} {self.done}/{len(self.documents)}"

    @property
    def pending(self) -> bool:
        return self.state in CONVERSION_PENDING

    @property
    def total(self) -> int:
        return len(self.documents)

    @property
    def current(self) -> int:
        """The number of the document being prepared ("Preparing 2 of 4")."""
        return min(self.done + 1, self.total)

    @property
    def outcomes(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """Each document asked for, with what became of it (once the job has run)."""
        return list(zip(self.documents, self.results, strict=False))

    @property
    def not_printed(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return [(entry, result) for entry, result in self.outcomes if result["status"] != "printed"]
