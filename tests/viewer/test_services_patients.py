"""patient_open and documents_list against the real sandbox over loopback."""

from __future__ import annotations

from datetime import date

import pytest
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.http import Http404

from gpconnect import AccessDenied, NoPatientConsent, PatientNotFound
from tests.viewer.conftest import RecordingSandbox, make_user, nhs_number_of
from viewer import services
from viewer.models import AuditEvent
from viewer.services import DocumentFilters, PatientLookupError

pytestmark = pytest.mark.django_db


def open_patient(user: User, scenario: str, session: SessionStore | None = None) -> str:
    session = session if session is not None else SessionStore()
    context = services.patient_open(user=user, nhs_number=nhs_number_of(scenario), session=session)
    return context.id


def test_the_documents_patient_opens_and_lists_43_documents(
    gp: RecordingSandbox, clinician: User
) -> None:
    session = SessionStore()
    context = services.patient_open(user=clinician, nhs_number="999 000 0018", session=session)
    assert context.nhs_number == "9990000018"
    assert context.practice_ods == "A20047"
    assert context.logical_id == "pat-9990000018"
    assert context.differences == ()
    assert context.pds.name.display == "WHITAKER, Margaret Ann (Mrs)"
    assert len(context.id) >= 20 and "9990000018" not in context.id

    page = services.documents_list(
        user=clinician, context_id=context.id, session=session, filters=DocumentFilters()
    )
    assert page.total == 43
    assert page.showing == "Showing 1–25 of 43 documents"
    assert len(page.rows) == 25 and page.pages == 2
    assert page.has_not_for_patient
    assert any(not row.retrievable and row.unavailable_reason for row in page.rows) or any(
        row.external for row in page.rows
    )


def test_opening_a_patient_audits_the_search_with_its_trace_ids(
    gp: RecordingSandbox, clinician: User
) -> None:
    context_id = open_patient(clinician, "documents")
    event = AuditEvent.objects.get(action="search")
    assert (event.outcome, event.nhs_number, event.context_id) == (
        "success",
        "9990000018",
        context_id,
    )
    assert event.trace_id and event.trace_id in event.detail
    assert event.username == "clinician" and event.role == "Clinician"


def test_the_sds_answer_is_kept_in_the_session_and_reused(
    gp: RecordingSandbox, clinician: User
) -> None:
    session = SessionStore()
    open_patient(clinician, "documents", session)
    assert session[services.SDS_SESSION_KEY]
    sds_calls = len([p for p in gp.paths if "spine-directory" in p])
    open_patient(clinician, "no-consent", session)  # the same practice
    assert len([p for p in gp.paths if "spine-directory" in p]) == sds_calls


def test_a_restricted_patient_stops_before_any_gp_connect_request(
    gp: RecordingSandbox, clinician: User
) -> None:
    with pytest.raises(PatientLookupError) as raised:
        open_patient(clinician, "sensitive")
    assert raised.value.reason == "restricted"
    assert "restricted" not in raised.value.message.lower()  # the flag is not revealed
    assert [p for p in gp.paths if "personal-demographics" in p]
    assert gp.practice_paths("A20047") == []
    assert not [p for p in gp.paths if "spine-directory" in p]
    event = AuditEvent.objects.get(action="search")
    assert (event.outcome, event.nhs_number) == ("denied", "9990000050")


def test_a_patient_not_registered_at_the_practice_gives_the_not_registered_outcome(
    gp: RecordingSandbox, clinician: User
) -> None:
    with pytest.raises(PatientLookupError) as raised:
        open_patient(clinician, "not-registered")
    assert raised.value.reason == "not_registered"
    assert "not registered" in raised.value.message
    assert raised.value.trace_id
    assert AuditEvent.objects.get(action="search").outcome == "failure"


def test_a_patient_who_dissented_opens_but_the_list_raises_no_patient_consent(
    gp: RecordingSandbox, clinician: User
) -> None:
    session = SessionStore()
    context_id = open_patient(clinician, "no-consent", session)
    with pytest.raises(NoPatientConsent) as raised:
        services.documents_list(
            user=clinician, context_id=context_id, session=session, filters=DocumentFilters()
        )
    assert raised.value.trace_id
    failure = AuditEvent.objects.get(action="list_documents")
    assert (failure.outcome, failure.trace_id) == ("failure", raised.value.trace_id)


def test_a_practice_that_switched_access_document_off_raises_access_denied(
    gp: RecordingSandbox, clinician: User
) -> None:
    with pytest.raises(AccessDenied):
        open_patient(clinician, "access-denied")


def test_a_number_unknown_to_pds_raises_patient_not_found(
    gp: RecordingSandbox, clinician: User
) -> None:
    with pytest.raises(PatientNotFound):
        services.patient_open(user=clinician, nhs_number="9990000999", session=SessionStore())


def test_another_users_context_is_a_404_and_an_access_denied_audit(
    gp: RecordingSandbox, clinician: User
) -> None:
    session = SessionStore()
    context_id = open_patient(clinician, "documents", session)
    intruder = make_user("intruder", "Clinician")
    with pytest.raises(Http404):
        services.documents_list(
            user=intruder, context_id=context_id, session=session, filters=DocumentFilters()
        )
    denied = AuditEvent.objects.get(action="access_denied")
    assert (denied.username, denied.outcome, denied.context_id) == (
        "intruder",
        "denied",
        context_id,
    )
    with pytest.raises(Http404):
        services.documents_list(
            user=clinician, context_id=context_id, session=SessionStore(), filters=DocumentFilters()
        )


def test_sorting_and_paging_reuse_the_cached_provider_answer(
    gp: RecordingSandbox, clinician: User
) -> None:
    session = SessionStore()
    context_id = open_patient(clinician, "documents", session)
    for filters in (
        DocumentFilters(),
        DocumentFilters(page=2),
        DocumentFilters(sort="title", direction="asc"),
        DocumentFilters(keyword="letter"),
    ):
        services.documents_list(
            user=clinician, context_id=context_id, session=session, filters=filters
        )
    searches = [p for p in gp.paths if p.endswith("/DocumentReference")]
    assert len(searches) == 1
    assert AuditEvent.objects.filter(action="list_documents", outcome="success").count() == 4


def test_the_date_range_and_author_go_to_the_provider_and_the_keyword_is_applied_here(
    gp: RecordingSandbox, clinician: User
) -> None:
    session = SessionStore()
    context_id = open_patient(clinician, "documents", session)

    def listed(**kwargs: object) -> services.DocumentsPage:
        return services.documents_list(
            user=clinician,
            context_id=context_id,
            session=session,
            filters=DocumentFilters(**kwargs),  # type: ignore[arg-type]
        )

    everything = listed()
    by_author = listed(author="RR8")
    assert 0 < by_author.total < everything.total
    assert by_author.filter_description == "author organisation RR8"
    old = listed(preset="custom", created_to=date(2015, 1, 1))
    assert old.total < everything.total
    letters = listed(keyword="LETTER")
    assert 0 < letters.total < everything.total
    assert all("letter" in (r.title + r.type).lower() for r in letters.rows)
    assert len([p for p in gp.paths if p.endswith("/DocumentReference")]) == 3


def test_a_receptionist_sees_letters_only(gp: RecordingSandbox, receptionist: User) -> None:
    session = SessionStore()
    context_id = open_patient(receptionist, "documents", session)
    page = services.documents_list(
        user=receptionist, context_id=context_id, session=session, filters=DocumentFilters()
    )
    assert page.letters_only and 0 < page.total < 43
