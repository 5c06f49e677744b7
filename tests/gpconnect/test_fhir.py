"""What the viewer shows from the FHIR that GP Connect, PDS and SDS send.

The specification's own examples are used verbatim; `documents_search_quirky_bundle.json`
and `structured_with_documents.json` are ours, built to reproduce what real providers send
(PEERS §0 and §7) and the structured-record links the specification describes but never
published an example of (SPEC §2).
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpconnect.errors import InvalidResponse
from gpconnect.fhir import (
    DEFAULT_CONTENT_TYPE,
    UNAVAILABLE_REASON,
    UNTITLED_DOCUMENT,
    parse_capabilities,
    parse_document_search,
    parse_fhir_datetime,
    parse_patient,
    parse_patient_search,
    parse_pds_patient,
    parse_sds_asids,
    parse_sds_endpoints,
    parse_structured_documents,
)
from gpconnect.models import CodedConcept, DocumentSearch, DocumentSummary, LinkedDocument
from tests.fixtures import fixture_json

TRACE = "629ea9ba-a077-4d99-b289-7a9b19fd4e03"
SNOMED = "http://snomed.info/sct"
QUIRKY_BASE = "https://provider.example.nhs.uk/GP0001/STU3/1/GPConnect/Documents"


def by_title(search: DocumentSearch) -> dict[str, DocumentSummary]:
    return {document.title: document for document in search.documents}


def linked_by_title(documents: tuple[LinkedDocument, ...]) -> dict[str, LinkedDocument]:
    return {linked.document.title: linked for linked in documents}


def quirky() -> dict[str, DocumentSummary]:
    return by_title(
        parse_document_search(fixture_json("documents_search_quirky_bundle.json"), trace_id=TRACE)
    )


def document_bundle(**changes: Any) -> dict[str, Any]:
    """The specification's search example with its DocumentReference changed."""
    bundle = fixture_json("documents_search_bundle.json")
    document = next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "DocumentReference"
    )
    for name, value in changes.items():
        if value is None:
            document.pop(name, None)
        else:
            document[name] = value
    return bundle


def only_document(bundle: dict[str, Any]) -> DocumentSummary:
    (document,) = parse_document_search(bundle, trace_id=TRACE).documents
    return document


def searchset(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }


def resource_of(bundle: dict[str, Any], resource_type: str, resource_id: str | None = None) -> Any:
    return next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == resource_type
        and (resource_id is None or e["resource"].get("id") == resource_id)
    )


# Find a patient -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fixture", ["documents_find_patient_bundle.json", "foundations_find_patient_response.json"]
)
def test_the_find_patient_example_gives_jane_jackson_with_her_logical_id_and_nhs_number(
    fixture: str,
) -> None:
    search = parse_patient_search(fixture_json(fixture), trace_id=TRACE)

    patient = search.patient
    assert patient is not None
    assert patient.id == "2"
    assert patient.nhs_number == "9476719931"
    assert patient.name.display == "JACKSON, Jane (Miss)"
    assert patient.birth_date == date(1952, 5, 31)
    assert patient.gender == "female"
    assert patient.deceased is False
    assert patient.restricted is False
    assert search.trace_id == TRACE


def test_an_empty_searchset_means_the_practice_has_no_match_and_is_not_an_error() -> None:
    search = parse_patient_search({"resourceType": "Bundle", "type": "searchset"}, trace_id=TRACE)

    assert search.patient is None
    assert search.trace_id == TRACE


def test_the_same_patient_sent_twice_is_one_patient() -> None:
    patient = resource_of(fixture_json("documents_find_patient_bundle.json"), "Patient")

    search = parse_patient_search(searchset(patient, patient), trace_id=TRACE)

    assert search.patient is not None
    assert search.patient.id == "2"


def test_two_different_patients_are_refused_rather_than_one_being_guessed() -> None:
    first = resource_of(fixture_json("documents_find_patient_bundle.json"), "Patient")
    second = {**copy.deepcopy(first), "id": "3"}

    with pytest.raises(InvalidResponse, match="more than one patient") as raised:
        parse_patient_search(searchset(first, second), trace_id=TRACE)
    assert raised.value.trace_id == TRACE


def test_a_patient_with_a_different_nhs_number_from_the_one_asked_for_is_refused() -> None:
    bundle = fixture_json("documents_find_patient_bundle.json")

    assert parse_patient_search(bundle, trace_id=TRACE, nhs_number="947 671 9931").patient
    with pytest.raises(InvalidResponse, match="different NHS number") as raised:
        parse_patient_search(bundle, trace_id=TRACE, nhs_number="9999999999")
    assert raised.value.trace_id == TRACE


def test_a_patient_without_a_logical_id_is_refused_because_documents_cannot_be_searched() -> None:
    patient = resource_of(fixture_json("documents_find_patient_bundle.json"), "Patient")
    del patient["id"]

    with pytest.raises(InvalidResponse) as raised:
        parse_patient_search(searchset(patient), trace_id=TRACE)
    assert raised.value.trace_id == TRACE


def test_the_official_name_is_shown_rather_than_an_old_or_usual_one() -> None:
    patient = parse_patient(
        {
            "resourceType": "Patient",
            "id": "7",
            "name": [
                {"use": "old", "family": "Brown", "given": ["Jane"]},
                {"use": "usual", "family": "Jackson", "given": ["Janey"]},
                {
                    "use": "official",
                    "family": "Jackson",
                    "given": ["Jane", "Mary"],
                    "prefix": ["Ms"],
                },
            ],
        }
    )

    assert patient.name.display == "JACKSON, Jane Mary (Ms)"


def test_a_resource_that_is_not_a_patient_is_an_invalid_response() -> None:
    with pytest.raises(InvalidResponse):
        parse_patient({"resourceType": "Practitioner", "id": "7"})


def test_a_name_sent_only_as_text_is_shown_as_written() -> None:
    patient = parse_patient(
        {"resourceType": "Patient", "id": "7", "name": [{"text": "JACKSON Jane"}]}
    )

    assert patient.name.display == "JACKSON Jane"


def test_a_deceased_patient_carries_the_date_and_time_of_death() -> None:
    patient = parse_patient(
        {"resourceType": "Patient", "id": "7", "deceasedDateTime": "2024-02-29T13:05:00+00:00"}
    )

    assert patient.deceased is True
    assert patient.deceased_at == datetime(2024, 2, 29, 13, 5, tzinfo=UTC)


def test_a_patient_recorded_only_as_deceased_has_no_date_of_death() -> None:
    patient = parse_patient({"resourceType": "Patient", "id": "7", "deceasedBoolean": True})

    assert patient.deceased is True
    assert patient.deceased_at is None


def test_a_registered_practice_given_as_an_ods_identifier_is_read_without_the_bundle() -> None:
    patient = parse_patient(
        {
            "resourceType": "Patient",
            "id": "7",
            "generalPractitioner": [
                {
                    "identifier": {
                        "system": "https://fhir.nhs.uk/Id/ods-organization-code",
                        "value": "A82038",
                    }
                }
            ],
        }
    )

    assert patient.registered_practice_ods == "A82038"


# Not the FHIR a call expects ----------------------------------------------------------------

NOT_A_BUNDLE = [
    None,
    [],
    "Bundle",
    {"resourceType": "Patient", "id": "2"},
    {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "exception", "diagnostics": "Server busy"}],
    },
    {"entry": []},
]


@pytest.mark.parametrize("body", NOT_A_BUNDLE)
@pytest.mark.parametrize(
    "parse", [parse_patient_search, parse_document_search, parse_structured_documents]
)
def test_a_body_that_is_not_a_bundle_is_an_invalid_response_carrying_the_trace_id(
    parse: Any, body: Any
) -> None:
    with pytest.raises(InvalidResponse) as raised:
        parse(body, trace_id=TRACE)

    assert raised.value.trace_id == TRACE


def test_an_operation_outcome_sent_as_a_success_keeps_its_diagnostics_for_the_report() -> None:
    with pytest.raises(InvalidResponse) as raised:
        parse_document_search(NOT_A_BUNDLE[4], trace_id=TRACE)

    assert "Server busy" in str(raised.value)


def test_a_bundle_whose_entries_are_not_a_list_is_an_invalid_response() -> None:
    with pytest.raises(InvalidResponse) as raised:
        parse_document_search({"resourceType": "Bundle", "entry": {"oops": 1}}, trace_id=TRACE)

    assert raised.value.trace_id == TRACE


# Search for documents: the specification's example -----------------------------------------


def test_the_specification_search_example_gives_its_discharge_summary_with_its_author() -> None:
    search = parse_document_search(fixture_json("documents_search_bundle.json"), trace_id=TRACE)

    (document,) = search.documents
    assert document.id == "27863182736"
    assert document.identifier == "bb237762-dde2-11e9-9d36-2a2ae2dbcce4"
    assert document.title == "Discharge Summary"
    assert document.type == CodedConcept(
        display="Inpatient final discharge letter", code="824331000000106", system=SNOMED
    )
    assert document.created == datetime(2019, 6, 24, 9, 35, tzinfo=timezone(timedelta(hours=11)))
    assert document.indexed == datetime(2019, 7, 2, 9, 43, 41, tzinfo=timezone(timedelta(hours=11)))
    assert document.author_organisation == "The Trevelyan Practice"
    assert document.author_organisation_ods == "O001"
    assert document.author_practitioner is None
    # The example includes no custodian (SPEC §6.6), so internal/external is unknown.
    assert (document.custodian, document.custodian_ods, document.internal) == (None, None, None)
    assert document.content_type == "application/msword"
    assert document.size == 3654
    assert document.url == (
        "http://exampleGPSystem.co.uk/GP0001/STU3/1/gpconnect-documents/Binary/"
        "07a6483f-732b-461e-86b6-edb665c45510"
    )
    assert document.retrievable
    assert document.unavailable_reason is None
    assert document.not_for_patient_disclosure is False
    assert document.encounter_reference == "Encounter/4"
    assert search.trace_id == TRACE


def test_the_search_example_names_the_patient_and_finds_her_practice_through_the_usual_gp() -> None:
    search = parse_document_search(fixture_json("documents_search_bundle.json"), trace_id=TRACE)

    assert search.patient is not None
    assert search.patient.id == "04603d77-1a4e-4d63-b246-d7504f8bd833"
    assert search.patient.nhs_number == "9999999999"
    assert search.patient.name.plain == "Miss Jane Jackson"
    # generalPractitioner → Practitioner → its PractitionerRole → the practice's Organization.
    assert search.patient.registered_practice_ods == "O001"


def test_a_patient_with_no_documents_gets_an_empty_list() -> None:
    bundle = fixture_json("documents_search_bundle.json")
    bundle["entry"] = [
        e for e in bundle["entry"] if e["resource"]["resourceType"] != "DocumentReference"
    ]

    search = parse_document_search(bundle, trace_id=TRACE)

    assert search.documents == ()
    assert search.patient is not None


# Search for documents: what real providers send ---------------------------------------------


def test_a_duplicated_entry_is_listed_once_and_entered_in_error_documents_are_left_out() -> None:
    search = parse_document_search(
        fixture_json("documents_search_quirky_bundle.json"), trace_id=TRACE
    )

    assert [d.title for d in search.documents] == [
        "Discharge summary - Riverside General Hospital",
        "Scanned referral form",
        "Wound photograph",
        "Dictated letter",
        "!@£$%^&*()_==-][}[ Document Title",
        "Inpatient discharge letter (scanned)",
        "Letter from podiatry",
    ]
    assert search.patient is not None
    assert search.patient.name.display == "FAIRBROTHER, Pauline Ann (Mrs)"
    assert search.patient.registered_practice_ods == "GP0001"


def test_a_text_only_type_is_shown_as_its_text_without_a_code() -> None:
    document = quirky()["Discharge summary - Riverside General Hospital"]

    assert document.type == CodedConcept(display="Discharge summary")


def test_a_coded_type_without_a_display_is_shown_by_its_text_and_keeps_its_code() -> None:
    document = quirky()["!@£$%^&*()_==-][}[ Document Title"]

    assert document.type == CodedConcept(display="Letter", code="824331000000106", system=SNOMED)


def test_a_document_without_a_created_date_still_has_the_date_it_was_filed() -> None:
    document = quirky()["Discharge summary - Riverside General Hospital"]

    assert document.created is None
    assert document.indexed == datetime(2023, 3, 14, 10, 21, 9, tzinfo=UTC)


def test_a_created_date_of_only_a_year_and_month_is_the_first_of_that_month() -> None:
    assert quirky()["Wound photograph"].created == date(2022, 11, 1)


def test_the_binary_url_is_kept_verbatim_even_with_a_mixed_case_base_path() -> None:
    document = quirky()["Discharge summary - Riverside General Hospital"]

    assert document.url == f"{QUIRKY_BASE}/Binary/0b6a0f5e-1c7e-4d3a-9f2b-5e8d7c6b4a31"


def test_odd_characters_in_a_title_are_kept_as_given_and_only_trimmed() -> None:
    assert "!@£$%^&*()_==-][}[ Document Title" in quirky()


@pytest.mark.parametrize(
    ("title", "content_type", "size"),
    [
        ("Scanned referral form", "application/octet-stream", 20480),
        ("Wound photograph", "image/tiff", 1048576),
        ("Dictated letter", "audio/x-au", 352800),
    ],
)
def test_unusual_formats_keep_the_content_type_and_size_the_provider_gave(
    title: str, content_type: str, size: int
) -> None:
    document = quirky()[title]

    assert (document.content_type, document.size) == (content_type, size)
    assert document.retrievable


def test_an_attachment_title_on_an_available_document_is_not_a_reason_it_is_unavailable() -> None:
    document = quirky()["Scanned referral form"]

    assert document.retrievable
    assert document.unavailable_reason is None


def test_a_document_without_a_url_is_a_placeholder_with_the_providers_reason() -> None:
    document = quirky()["Inpatient discharge letter (scanned)"]

    assert document.url is None
    assert not document.retrievable
    assert document.unavailable_reason == (
        "File size 18551238 bytes greater than maximum allowable (5MB)"
    )
    assert document.size == 18551238
    assert document.content_type == "application/pdf"


def test_a_placeholder_without_a_reason_gets_a_plain_english_one() -> None:
    document = quirky()["Letter from podiatry"]

    assert not document.retrievable
    assert document.unavailable_reason == UNAVAILABLE_REASON
    assert document.size == 0


@pytest.mark.parametrize(
    ("title", "nopat"),
    [
        ("Dictated letter", True),  # meta.security
        ("!@£$%^&*()_==-][}[ Document Title", True),  # securityLabel
        ("Discharge summary - Riverside General Hospital", False),
        ("Scanned referral form", False),
    ],
)
def test_documents_marked_nopat_are_flagged_not_for_disclosure_to_the_patient(
    title: str, nopat: bool
) -> None:
    assert quirky()[title].not_for_patient_disclosure is nopat


def test_a_letter_from_another_organisation_is_external_with_both_organisations_named() -> None:
    document = quirky()["Discharge summary - Riverside General Hospital"]

    # The author is referenced by an absolute URL matching its entry's fullUrl.
    assert document.author_organisation == "Riverside General Hospital"
    assert document.author_organisation_ods == "RZZ99"
    assert document.custodian == "The Trevelyan Practice"
    assert document.custodian_ods == "GP0001"
    assert document.internal is False


def test_a_document_written_at_the_practice_is_internal_and_names_the_clinician() -> None:
    document = quirky()["Scanned referral form"]

    assert document.author_practitioner == "Dr Claire Jones"
    assert document.author_organisation == "The Trevelyan Practice"
    assert document.internal is True


def test_a_document_authored_only_by_a_clinician_has_unknown_internal_status() -> None:
    document = quirky()["Wound photograph"]

    assert document.author_practitioner == "Dr Claire Jones"
    assert document.author_organisation is None
    assert document.internal is None


def test_the_encounter_reference_is_kept_as_the_provider_wrote_it() -> None:
    document = quirky()["Discharge summary - Riverside General Hospital"]

    assert document.encounter_reference == "Encounter/7c1e3d5f-2a4b-4c6d-8e0f-1a3b5c7d9e2f"


@pytest.mark.parametrize(
    "bad_date", ["2022-13-45T99:00:00", "yesterday", "2019-02-30", "", "  ", 20190624, None, {}]
)
def test_a_malformed_date_is_no_date_rather_than_a_crash(bad_date: Any) -> None:
    document = only_document(document_bundle(created=bad_date, indexed=bad_date))

    assert document.created is None
    assert document.indexed is None


def test_a_document_without_a_description_is_titled_by_its_type() -> None:
    document = only_document(document_bundle(description=None))

    assert document.title == "Inpatient final discharge letter"


def test_a_document_with_neither_description_nor_type_is_untitled() -> None:
    document = only_document(document_bundle(description="   ", type=None))

    assert document.title == UNTITLED_DOCUMENT
    assert document.type is None


def test_a_missing_content_type_is_treated_as_unknown_binary_and_a_size_in_text_is_read() -> None:
    document = only_document(
        document_bundle(
            content=[{"attachment": {"url": "https://x.example/Binary/1", "size": "42"}}]
        )
    )

    assert document.content_type == DEFAULT_CONTENT_TYPE
    assert document.size == 42


def test_a_document_with_no_content_at_all_is_a_placeholder() -> None:
    document = only_document(document_bundle(content=None))

    assert document.url is None
    assert document.unavailable_reason == UNAVAILABLE_REASON
    assert document.size is None


def test_an_author_known_only_by_its_ods_code_is_named_from_the_reference() -> None:
    author = {
        "identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "RZZ99"},
        "display": "Riverside General Hospital",
    }
    custodian = {"reference": "Organization/db67f447-b30d-442a-8e31-6918d1367eeb"}

    document = only_document(document_bundle(author=[author], custodian=custodian))

    assert document.author_organisation == "Riverside General Hospital"
    assert document.author_organisation_ods == "RZZ99"
    assert document.custodian_ods == "O001"
    assert document.internal is False


def test_documents_about_another_patient_are_refused() -> None:
    bundle = fixture_json("documents_search_quirky_bundle.json")
    resource_of(bundle, "DocumentReference")["subject"] = {"reference": "Patient/someone-else"}

    with pytest.raises(InvalidResponse, match="more than one patient") as raised:
        parse_document_search(bundle, trace_id=TRACE)
    assert raised.value.trace_id == TRACE


def test_documents_about_a_patient_other_than_the_one_searched_are_refused() -> None:
    bundle = fixture_json("documents_search_bundle.json")

    assert parse_document_search(
        bundle, trace_id=TRACE, patient_id="04603d77-1a4e-4d63-b246-d7504f8bd833"
    ).documents
    with pytest.raises(InvalidResponse):
        parse_document_search(bundle, trace_id=TRACE, patient_id="2")


def test_a_bundle_whose_patient_is_not_the_documents_subject_is_refused() -> None:
    bundle = fixture_json("documents_search_bundle.json")
    resource_of(bundle, "Patient")["id"] = "someone-else"

    with pytest.raises(InvalidResponse):
        parse_document_search(bundle, trace_id=TRACE)


# Dates --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2019", date(2019, 1, 1)),
        ("2019-06", date(2019, 6, 1)),
        ("2019-06-24", date(2019, 6, 24)),
        ("2019-06-24T09:35:00Z", datetime(2019, 6, 24, 9, 35, tzinfo=UTC)),
        (
            "2019-06-24T09:35:00.123+01:00",
            datetime(2019, 6, 24, 9, 35, 0, 123000, tzinfo=timezone(timedelta(hours=1))),
        ),
        ("2019-06-24T09:35:00", datetime(2019, 6, 24, 9, 35)),
        ("2019-02-29", None),
        ("2019-06-24T24:61:00Z", None),
        ("24/06/2019", None),
    ],
)
def test_fhir_dates_become_dates_or_datetimes_and_bad_ones_none(value: str, expected: Any) -> None:
    assert parse_fhir_datetime(value) == expected


def test_a_datetime_with_an_offset_is_timezone_aware_and_one_without_is_not() -> None:
    aware = parse_fhir_datetime("2019-06-24T09:35:00+11:00")
    naive = parse_fhir_datetime("2019-06-24T09:35:00")

    assert isinstance(aware, datetime) and aware.utcoffset() == timedelta(hours=11)
    assert isinstance(naive, datetime) and naive.tzinfo is None


@given(st.one_of(st.text(), st.integers(), st.none(), st.floats()))
def test_no_date_value_ever_makes_parsing_crash(value: Any) -> None:
    result = parse_fhir_datetime(value)

    assert result is None or isinstance(result, date)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["reference", "coding", "code", "text", "url", "id"])
            | st.text(max_size=5),
            children,
            max_size=3,
        )
    ),
    max_leaves=10,
)
DOCUMENT_FIELDS = [
    "id",
    "meta",
    "securityLabel",
    "identifier",
    "status",
    "type",
    "subject",
    "created",
    "indexed",
    "author",
    "custodian",
    "description",
    "content",
    "context",
]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(DOCUMENT_FIELDS), JSON, max_size=6))
def test_a_document_reference_full_of_unexpected_values_never_crashes_the_search(
    changes: dict[str, Any],
) -> None:
    bundle = document_bundle()
    document = resource_of(bundle, "DocumentReference")
    document.update(changes)

    try:
        search = parse_document_search(bundle, trace_id=TRACE)
    except InvalidResponse as error:  # only ever refused, e.g. a subject that is another patient
        assert error.trace_id == TRACE
    else:
        assert all(d.title and d.content_type for d in search.documents)


# Capability statements ----------------------------------------------------------------------


def test_the_access_document_capability_statement_gives_its_version_and_formats() -> None:
    capabilities = parse_capabilities(
        fixture_json("documents_capability_statement.json"), trace_id=TRACE
    )

    assert capabilities.name == "GP Connect API - Access Document"
    assert capabilities.version == "1.6.2"
    assert capabilities.fhir_version == "3.0.1"
    assert capabilities.publisher == "[Provider Software Vendor Name]"
    assert capabilities.formats == ("application/fhir+json", "application/fhir+xml")
    assert capabilities.trace_id == TRACE


def test_the_foundations_capability_statement_gives_its_version() -> None:
    capabilities = parse_capabilities(
        fixture_json("foundations_get_capability_statement_response.json"), trace_id=TRACE
    )

    assert (capabilities.name, capabilities.version) == ("GP Connect", "1.2.7")


@pytest.mark.parametrize("body", [None, "metadata", fixture_json("documents_search_bundle.json")])
def test_anything_but_a_capability_statement_is_an_invalid_response(body: Any) -> None:
    with pytest.raises(InvalidResponse) as raised:
        parse_capabilities(body, trace_id=TRACE)

    assert raised.value.trace_id == TRACE


# Access Record Structured -------------------------------------------------------------------


def structured() -> dict[str, LinkedDocument]:
    result = parse_structured_documents(
        fixture_json("structured_with_documents.json"), trace_id=TRACE
    )
    return linked_by_title(result.documents)


@pytest.mark.parametrize(
    "fixture",
    ["structured_consultations_response_bundle.json", "structured_problems_response_bundle.json"],
)
def test_the_specification_structured_examples_hold_no_documents_and_parse_cleanly(
    fixture: str,
) -> None:
    result = parse_structured_documents(fixture_json(fixture), trace_id=TRACE)

    assert result.documents == ()
    assert result.warnings == ()
    assert result.trace_id == TRACE
    assert result.patient is not None
    assert result.patient.nhs_number == "9999999999"
    assert result.patient.name.display == "JACKSON, Jane (Miss)"
    # Both name the usual GP rather than the practice (the problems one as a lone object).
    assert result.patient.registered_practice_ods == "O001"


def test_every_document_in_the_structured_record_is_listed_linked_or_not() -> None:
    result = parse_structured_documents(
        fixture_json("structured_with_documents.json"), trace_id=TRACE
    )

    assert [linked.document.title for linked in result.documents] == [
        "Letter from community mental health team",
        "Photograph of swollen legs",
        "Telephone triage notes",
        "Discharge summary (scanned)",
        "Practice registration form",
    ]
    unlinked = result.documents[-1]
    assert (unlinked.consultations, unlinked.problems) == ((), ())


def test_a_document_filed_in_a_consultation_and_pointing_at_it_is_linked_to_it_once() -> None:
    letter = structured()["Letter from community mental health team"]

    (consultation,) = letter.consultations
    assert consultation.id == "Encounter1"
    assert consultation.title == "Surgery Consultation"
    assert consultation.date == datetime(2019, 3, 28, 10, 30, tzinfo=UTC)


def test_a_document_related_to_a_problem_names_the_problem() -> None:
    letter = structured()["Letter from community mental health team"]

    assert [(p.id, p.name) for p in letter.problems] == [
        ("Problem-A-Anxiety-With-Depression", "Anxiety with depression")
    ]


def test_a_related_clinical_content_extension_with_an_http_url_still_links_the_problem() -> None:
    bundle = fixture_json("structured_with_documents.json")
    del resource_of(bundle, "List", "Consultation1-Topic1")["extension"]  # leave only the Condition

    result = parse_structured_documents(bundle, trace_id=TRACE)

    letter = linked_by_title(result.documents)["Letter from community mental health team"]
    assert [p.name for p in letter.problems] == ["Anxiety with depression"]


def test_a_document_directly_under_a_flat_topic_is_linked_to_the_consultation_and_its_problem() -> (
    None
):
    photo = structured()["Photograph of swollen legs"]

    assert [c.id for c in photo.consultations] == ["Encounter1"]
    # The Condition has no text: its coding's display names it.
    assert [p.name for p in photo.problems] == ["Swelling of lower limb"]


def test_a_document_that_only_points_at_its_encounter_is_linked_to_that_consultation() -> None:
    notes = structured()["Telephone triage notes"]

    (consultation,) = notes.consultations
    assert consultation.title == "Telephone encounter"
    assert consultation.date == datetime(2019, 5, 1, 10, 30, tzinfo=UTC)
    assert notes.problems == ()


def test_a_document_that_is_the_actual_problem_is_linked_to_it_and_may_be_a_placeholder() -> None:
    discharge = structured()["Discharge summary (scanned)"]

    assert discharge.consultations == ()
    assert [p.id for p in discharge.problems] == ["Problem-B-Swollen-Legs"]
    assert not discharge.document.retrievable
    assert discharge.document.unavailable_reason == (
        "File size 18551238 bytes greater than maximum allowable (5MB)"
    )


def test_structured_documents_carry_their_authors_and_binary_urls() -> None:
    letter = structured()["Letter from community mental health team"].document

    assert letter.author_organisation == "The Trevelyan Practice"
    assert letter.internal is True
    assert letter.url == (
        "https://provider.example.nhs.uk/GP0001/STU3/1/gpconnect/documents/Binary/"
        "DocumentReference-Letter-1"
    )
    assert letter.type == CodedConcept(display="Letter")


def test_a_consultation_without_its_encounter_is_dated_and_titled_from_its_list() -> None:
    bundle = fixture_json("structured_with_documents.json")
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"].get("id") != "Encounter2"]
    topic = resource_of(bundle, "List", "Consultation2-Topic1")
    topic["entry"].append({"item": {"reference": "DocumentReference/DocumentReference-Phone-1"}})

    result = parse_structured_documents(bundle, trace_id=TRACE)

    (consultation,) = linked_by_title(result.documents)["Telephone triage notes"].consultations
    assert consultation.id == "Consultation2"
    assert consultation.title == "Telephone encounter"
    assert consultation.date == datetime(2019, 5, 1, 10, 30, tzinfo=UTC)


def test_the_clinicians_chosen_term_names_a_problem_when_it_has_no_text() -> None:
    bundle = fixture_json("structured_with_documents.json")
    coding = resource_of(bundle, "Condition", "Problem-B-Swollen-Legs")["code"]["coding"][0]
    coding["extension"] = [
        {
            "url": "https://fhir.hl7.org.uk/STU3/StructureDefinition/Extension-coding-sctdescid",
            "extension": [
                {"url": "descriptionId", "valueId": "2729461000000110"},
                {"url": "descriptionDisplay", "valueString": "Swollen leg"},
            ],
        }
    ]

    result = parse_structured_documents(bundle, trace_id=TRACE)

    photo = linked_by_title(result.documents)["Photograph of swollen legs"]
    assert [p.name for p in photo.problems] == ["Swollen leg"]


def test_a_warning_on_the_document_lists_says_the_list_may_be_incomplete() -> None:
    result = parse_structured_documents(
        fixture_json("structured_with_documents.json"), trace_id=TRACE
    )

    assert result.warnings == ("confidential-items",)


def test_a_structured_record_for_a_different_nhs_number_is_refused() -> None:
    bundle = fixture_json("structured_with_documents.json")

    assert parse_structured_documents(bundle, trace_id=TRACE, nhs_number="9999999999").patient
    with pytest.raises(InvalidResponse) as raised:
        parse_structured_documents(bundle, trace_id=TRACE, nhs_number="9476719931")
    assert raised.value.trace_id == TRACE


# PDS ----------------------------------------------------------------------------------------


def test_a_pds_record_gives_the_nhs_number_usual_name_and_registered_practice() -> None:
    patient = parse_pds_patient(fixture_json("pds_fhir_patient.json"))

    assert patient.id == patient.nhs_number == "9000000009"
    assert patient.name.display == "SMITH, Jane (Mrs)"
    assert patient.birth_date == date(2010, 10, 22)
    assert patient.gender == "female"
    assert patient.deceased is True
    assert patient.deceased_at == datetime(2010, 10, 22, tzinfo=UTC)
    assert patient.registered_practice_ods == "Y12345"
    assert patient.restricted is False


def test_a_restricted_pds_record_is_flagged_so_gp_connect_is_not_called() -> None:
    patient = parse_pds_patient(fixture_json("pds_fhir_patient_sensitive.json"))

    assert patient.restricted is True
    assert patient.nhs_number == "9000000025"
    assert patient.name.plain == "Mrs Janet Smythe"


def test_a_very_restricted_pds_record_is_flagged_too() -> None:
    resource = fixture_json("pds_fhir_patient.json")
    resource["meta"]["security"] = [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "V"}
    ]

    assert parse_pds_patient(resource).restricted is True


def test_the_pds_registered_practice_is_read_from_its_value_whatever_the_system() -> None:
    resource = fixture_json("pds_fhir_patient.json")
    resource["generalPractitioner"] = [
        {
            "type": "Organization",
            "identifier": {
                "system": "https://digital.nhs.uk/services/organisation-data-service",
                "value": "A82038",
            },
        }
    ]

    assert parse_pds_patient(resource).registered_practice_ods == "A82038"


def test_the_pds_usual_name_is_preferred() -> None:
    resource = fixture_json("pds_fhir_patient.json")
    resource["name"].insert(0, {"use": "nickname", "family": "Smith", "given": ["Janey"]})

    assert parse_pds_patient(resource).name.given == ("Jane",)


@pytest.mark.parametrize(
    "body", [None, fixture_json("sds_fhir_device.json"), {"resourceType": "Patient"}]
)
def test_a_pds_reply_that_is_not_a_patient_with_an_nhs_number_is_an_invalid_response(
    body: Any,
) -> None:
    with pytest.raises(InvalidResponse) as raised:
        parse_pds_patient(body, trace_id="pds-request-1")

    assert raised.value.trace_id == "pds-request-1"


# SDS ----------------------------------------------------------------------------------------


def test_an_sds_endpoint_gives_the_service_root_and_party_key() -> None:
    assert parse_sds_endpoints(fixture_json("sds_fhir_endpoint.json")) == [
        ("https://msg.int.spine2.ncrs.nhs.uk/reliablemessaging/reliablerequest", "YES-0000806")
    ]


def test_sds_endpoints_in_a_searchset_are_listed_once_each_leaving_out_switched_off_ones() -> None:
    endpoint = fixture_json("sds_fhir_endpoint.json")
    off = {**copy.deepcopy(endpoint), "status": "off", "address": "https://old.example.nhs.uk/"}
    without_key = {
        "resourceType": "Endpoint",
        "status": "active",
        "address": "https://b.example.nhs.uk/x",
    }
    no_address = {"resourceType": "Endpoint", "status": "active"}

    result = parse_sds_endpoints(searchset(off, endpoint, endpoint, without_key, no_address))

    assert result == [
        ("https://msg.int.spine2.ncrs.nhs.uk/reliablemessaging/reliablerequest", "YES-0000806"),
        ("https://b.example.nhs.uk/x", None),
    ]


def test_an_empty_sds_search_gives_no_endpoints_and_no_asids() -> None:
    assert parse_sds_endpoints(searchset()) == []
    assert parse_sds_asids(searchset()) == []


def test_an_sds_device_gives_its_asid() -> None:
    device = fixture_json("sds_fhir_device.json")

    assert parse_sds_asids(device) == ["200000000985"]
    assert parse_sds_asids(searchset(device, device)) == ["200000000985"]


def test_sds_asids_can_be_narrowed_to_one_party_key() -> None:
    device = fixture_json("sds_fhir_device.json")

    assert parse_sds_asids(device, party_key="A20047-821870") == ["200000000985"]
    assert parse_sds_asids(device, party_key="YES-0000806") == []


@pytest.mark.parametrize("parse", [parse_sds_endpoints, parse_sds_asids])
@pytest.mark.parametrize(
    "body", [None, {"resourceType": "OperationOutcome"}, fixture_json("pds_fhir_patient.json")]
)
def test_an_sds_reply_that_is_neither_the_resource_nor_a_bundle_is_an_invalid_response(
    parse: Any, body: Any
) -> None:
    with pytest.raises(InvalidResponse) as raised:
        parse(body, trace_id="sds-request-1")

    assert raised.value.trace_id == "sds-request-1"


# Our own fixtures ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fixture", ["documents_search_quirky_bundle.json", "structured_with_documents.json"]
)
def test_the_fixtures_we_built_are_valid_stu3_so_they_are_realistic(fixture: str) -> None:
    from fhir.resources.STU3.bundle import Bundle

    Bundle.model_validate(fixture_json(fixture))


def test_the_quirky_fixture_really_holds_a_duplicated_entry() -> None:
    bundle = fixture_json("documents_search_quirky_bundle.json")
    ids = [e["resource"]["id"] for e in bundle["entry"]]

    assert len(ids) == len(set(ids)) + 1
    assert json.dumps(bundle).count("/STU3/1/GPConnect/Documents/Binary/") >= 5
