"""The banner, the demographic cross-check and the cell formats."""

from __future__ import annotations

from datetime import date, datetime

from gpconnect import NoPatientConsent, ProviderUnavailable
from viewer.context import Demographics, PatientContext, demographic_differences
from viewer.presenters import ErrorPanel, PatientBanner, file_size, format_label, short_date
from viewer.services import PatientLookupError

PDS = Demographics(
    family="Whitaker",
    given=("Margaret", "Ann"),
    prefix=("Mrs",),
    birth_date=date(1948, 3, 14),
    gender="female",
)


def context(practice: Demographics = PDS, pds: Demographics = PDS) -> PatientContext:
    return PatientContext(
        id="ctx",
        user_id=1,
        nhs_number="9990000018",
        practice_ods="A20047",
        service_root="http://127.0.0.1:1/A20047/STU3/1/gpconnect/documents",
        asid="918999198001",
        logical_id="pat-9990000018",
        pds=pds,
        practice=practice,
        differences=tuple(demographic_differences(pds, practice)),
    )


def test_the_banner_follows_the_cui_formats() -> None:
    banner = PatientBanner.of(context(), today=date(2026, 3, 13))
    assert banner.name == "WHITAKER, Margaret Ann (Mrs)"
    assert (banner.born, banner.age) == ("14-Mar-1948", "77y")
    assert banner.gender == "Female"
    assert banner.nhs_number == "999 000 0018"
    assert banner.differences == ()


def test_unknown_values_read_not_known() -> None:
    unknown = Demographics(family="Doe", given=(), prefix=(), birth_date=None, gender=None)
    banner = PatientBanner.of(context(unknown, unknown), today=date(2026, 1, 1))
    assert (banner.born, banner.gender, banner.age) == ("Not known", "Not known", "")


def test_the_cross_check_names_each_field_that_differs() -> None:
    practice = Demographics(
        family="WHITAKER",  # case alone is not a difference
        given=("Margaret",),
        prefix=("Mrs",),
        birth_date=date(1948, 3, 15),
        gender="female",
    )
    assert demographic_differences(PDS, practice) == ["given name", "date of birth"]
    banner = PatientBanner.of(context(practice), today=date(2026, 1, 1))
    assert banner.differences_text == "given name and date of birth"


def test_a_deceased_patients_age_stops_at_death() -> None:
    died = Demographics(**{**PDS.__dict__, "deceased_at": date(2020, 3, 14)})
    banner = PatientBanner.of(context(died, died), today=date(2026, 1, 1))
    assert (banner.deceased_on, banner.age) == ("14-Mar-2020", "72y")


def test_the_context_round_trips_through_the_session_as_json() -> None:
    import json

    original = context()
    assert PatientContext.from_dict(json.loads(json.dumps(original.to_dict()))) == original


def test_cells_are_formatted_for_reading() -> None:
    assert short_date(datetime(2024, 3, 12, 9, 30)) == "12-Mar-2024"
    assert short_date(None) == ""
    assert file_size(1_258_291) == "1.2 MB"
    assert file_size(2048) == "2 KB"
    assert file_size(None) == ""
    assert format_label("application/pdf") == "PDF"
    assert format_label("application/x-unknown") == "application/x-unknown"


def test_error_panels_say_what_happened_and_whether_to_try_again() -> None:
    panel = ErrorPanel.of(NoPatientConsent(trace_id="t-1"))
    assert panel.title == "The patient has not agreed to share their record"
    assert (panel.retryable, panel.trace_id) == (False, "t-1")
    assert ErrorPanel.of(ProviderUnavailable()).retryable is True
    lookup = ErrorPanel.of(PatientLookupError("Stopped.", reason="restricted", trace_id="t-2"))
    assert lookup.title == "This patient's record cannot be shown"
