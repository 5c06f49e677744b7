"""Every error example of the specification maps to the right exception and message."""

from __future__ import annotations

import pytest

from gpconnect import errors
from gpconnect.errors import error_from_response
from tests.fixtures import fixture_bytes


@pytest.mark.parametrize(
    ("fixture", "status", "error_class", "spine_code", "message_part", "retryable"),
    [
        (
            "operationoutcome_access_denied.json",
            403,
            errors.AccessDenied,
            "ACCESS DENIED",
            "does not share records",
            False,
        ),
        (
            "operationoutcome_bad_request_jwt.json",
            400,
            errors.BadRequest,
            "BAD_REQUEST",
            "fault in this application",
            False,
        ),
        (
            "operationoutcome_duplicate_rejected.json",
            409,
            errors.DuplicateRejected,
            "DUPLICATE_REJECTED",
            "duplicate",
            False,
        ),
        (
            "operationoutcome_internal_server_error.json",
            500,
            errors.ProviderInternalError,
            "INTERNAL_SERVER_ERROR",
            "Trying again later may work",
            True,
        ),
        (
            "operationoutcome_invalid_nhs_number.json",
            400,
            errors.InvalidNhsNumber,
            "INVALID_NHS_NUMBER",
            "NHS number is not valid",
            False,
        ),
        (
            "operationoutcome_no_patient_consent.json",
            403,
            errors.NoPatientConsent,
            "NO_PATIENT_CONSENT",
            "asked their GP practice not to share",
            False,
        ),
        (
            "operationoutcome_no_record_found.json",
            404,
            errors.DocumentNotFound,
            "NO_RECORD_FOUND",
            "could not find this document",
            False,
        ),
        (
            "operationoutcome_patient_not_found.json",
            404,
            errors.PatientNotFound,
            "PATIENT_NOT_FOUND",
            "no record it can share",
            False,
        ),
        (
            "operationoutcome_reference_not_found.json",
            422,
            errors.BadRequest,
            "REFERENCE_NOT_FOUND",
            "could not accept the request",
            False,
        ),
        (
            "ssp_error_communicating_to_target.json",
            502,
            errors.ProviderUnavailable,
            "502",
            "could not be reached",
            True,
        ),
        (
            "ssp_error_method_not_allowed.json",
            405,
            errors.SpineProxyError,
            "405",
            "Spine refused",
            False,
        ),
        (
            "ssp_error_receiver_asid_not_authorised.json",
            403,
            errors.SpineProxyError,
            "403",
            "not set up on the NHS Spine",
            False,
        ),
        (
            "ssp_error_sender_asid_not_authorised.json",
            403,
            errors.SpineProxyError,
            "403",
            "does not recognise this application",
            False,
        ),
        (
            "ssp_error_sender_not_authorised_to_receiver.json",
            403,
            errors.SpineProxyError,
            "403",
            "does not allow this application",
            False,
        ),
        (
            "ssp_error_target_url_varies.json",
            400,
            errors.SpineProxyError,
            "400",
            "does not match its entry",
            False,
        ),
        (
            "ssp_error_unsupported_media_type.json",
            415,
            errors.SpineProxyError,
            "415",
            "Spine refused",
            False,
        ),
    ],
)
def test_each_specification_error_example_maps_to_its_exception_and_a_plain_message(
    fixture, status, error_class, spine_code, message_part, retryable
):
    error = error_from_response(status, fixture_bytes(fixture), trace_id="trace-1")

    assert type(error) is error_class
    assert error.spine_code == spine_code
    assert message_part in error.message
    assert error.retryable is retryable
    assert error.http_status == status
    assert error.trace_id == "trace-1"


def test_access_denied_written_with_an_underscore_is_the_same_error():
    body = fixture_bytes("operationoutcome_access_denied.json").replace(
        b"ACCESS DENIED", b"ACCESS_DENIED"
    )
    error = error_from_response(403, body)
    assert type(error) is errors.AccessDenied
    assert error.spine_code == "ACCESS DENIED"


def test_the_providers_diagnostics_are_kept_for_the_service_desk_but_not_shown_as_the_message():
    error = error_from_response(403, fixture_bytes("operationoutcome_access_denied.json"))
    assert error.diagnostics == "The Access Document capability is disabled at this practice."
    assert error.diagnostics not in error.message
    assert error.diagnostics in str(error)


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, errors.BadRequest),
        (401, errors.Forbidden),
        (404, errors.NotFound),
        (409, errors.Conflict),
        (500, errors.ProviderInternalError),
        (502, errors.ProviderUnavailable),
        (503, errors.ProviderUnavailable),
        (504, errors.ProviderUnavailable),
        (418, errors.ProviderError),
    ],
)
def test_a_body_that_is_not_an_operation_outcome_falls_back_to_the_http_status(status, error_class):
    error = error_from_response(status, b"<html><body>Bad Gateway</body></html>", trace_id="t")
    assert type(error) is error_class
    assert error.spine_code is None
    assert error.trace_id == "t"


def test_an_unknown_spine_code_keeps_the_code_and_falls_back_to_the_status():
    body = b"""{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid",
    "details":{"coding":[{"system":"https://fhir.nhs.uk/STU3/CodeSystem/Spine-ErrorOrWarningCode-1",
    "code":"SOMETHING_NEW","display":"Something new"}]}}]}"""
    error = error_from_response(422, body)
    assert type(error) is errors.BadRequest
    assert error.spine_code == "SOMETHING_NEW"
    assert error.display == "Something new"


def test_every_error_says_whether_trying_again_may_help():
    assert errors.ProviderUnavailable().retryable is True
    assert errors.PatientNotFound().retryable is False
    assert errors.NoPatientConsent().retryable is False
