"""`python -m gpconnect`: a connectivity check someone can run from a terminal."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import httpx
import pytest

from gpconnect import cli
from tests.fixtures import fixture_json

from .helpers import DOCUMENTS_ROOT, FakeProvider, json_response

PROVIDER = ["--root", DOCUMENTS_ROOT, "--asid", "918999198738"]


@pytest.fixture
def provider(monkeypatch):
    fake = FakeProvider()
    monkeypatch.setattr(
        cli, "build_http_client", lambda config: httpx.Client(transport=httpx.MockTransport(fake))
    )
    return fake


def test_find_patient_prints_the_patient_as_the_banner_shows_them(provider, capsys):
    provider.queue(json_response(200, fixture_json("documents_find_patient_bundle.json")))
    assert cli.main([*PROVIDER, "find-patient", "9476719931"]) == 0

    out, err = capsys.readouterr()
    assert "JACKSON, Jane (Miss)" in out
    assert "NHS No. 947 671 9931" in out
    assert "Ssp-TraceID" in err


def test_list_documents_finds_the_patient_then_lists_their_documents(provider, capsys):
    # The specification's two examples describe different patients: make the found patient
    # the one the documents belong to, as a real practice would.
    search = fixture_json("documents_search_bundle.json")
    patient = next(e for e in search["entry"] if e["resource"]["resourceType"] == "Patient")
    found = {"resourceType": "Bundle", "type": "searchset", "entry": [patient]}
    provider.queue(json_response(200, found), json_response(200, search))
    assert cli.main([*PROVIDER, "list-documents", "9999999999", "--from", "2019-01-01"]) == 0

    out, _ = capsys.readouterr()
    assert "Discharge Summary" in out
    assert "gpconnect-documents/Binary/07a6483f-732b-461e-86b6-edb665c45510" in out
    assert ("created", "ge2019-01-01") in provider.last.url.params.multi_items()


def test_save_document_writes_the_decoded_bytes_to_the_file(provider, tmp_path, capsys):
    document = b"%PDF-1.4 a letter"
    body = {
        "resourceType": "Binary",
        "contentType": "application/pdf",
        "content": base64.b64encode(document).decode(),
    }
    provider.queue(json_response(200, json.dumps(body).encode()))
    target = tmp_path / "letter.pdf"

    assert cli.main([*PROVIDER, "save-document", DOCUMENTS_ROOT + "/Binary/1", str(target)]) == 0
    assert target.read_bytes() == document
    assert "17 bytes (application/pdf)" in capsys.readouterr().err


def test_a_provider_error_is_explained_and_exits_non_zero(provider, capsys):
    provider.queue(json_response(403, fixture_json("operationoutcome_access_denied.json")))
    assert cli.main([*PROVIDER, "find-patient", "9476719931"]) == 1
    err = capsys.readouterr().err
    assert "does not share records" in err
    assert "trace_id=" in err


def test_an_invalid_nhs_number_is_a_usage_error(provider, capsys):
    assert cli.main([*PROVIDER, "find-patient", "1234567891"]) == 2
    assert "not a valid NHS number" in capsys.readouterr().err


def test_a_documents_listing_about_a_different_patient_is_refused(provider, capsys):
    provider.queue(
        json_response(200, fixture_json("documents_find_patient_bundle.json")),
        json_response(200, fixture_json("documents_search_bundle.json")),
    )
    assert cli.main([*PROVIDER, "list-documents", "9476719931"]) == 1
    assert "Discharge Summary" not in capsys.readouterr().out


def test_the_module_runs_as_a_command_and_explains_itself():
    result = subprocess.run(
        [sys.executable, "-m", "gpconnect", "--help"], capture_output=True, text=True, check=True
    )
    assert "find-patient" in result.stdout and "save-document" in result.stdout


def test_slots_lists_each_free_slot_with_what_the_specification_says_to_show(provider, capsys):
    provider.queue(
        json_response(200, fixture_json("appointments_search_for_free_slots_response.json"))
    )
    root = "https://provider.example.nhs.uk/A20047/STU3/1/gpconnect"
    args = ["--root", root, "--asid", "918999198738", "--consumer-org-type", "gp-practice"]
    assert cli.main([*args, "slots", "2016-08-15", "2016-08-21"]) == 0

    out, err = capsys.readouterr()
    first = out.splitlines()[0]
    assert first.startswith("Mon 15 Aug 11:30-11:40 (10 min)  In-person  General GP Appointment")
    assert "Mrs Sarah Black (General Medical Practitioner, female)" in first
    assert "The Trevelyan Practice, Trevelyan Square, Boar Ln, Leeds, LS1 6AE" in first
    assert (
        "searchFilter",
        "https://fhir.nhs.uk/STU3/CodeSystem/GPConnect-OrganisationType-1|gp-practice",
    ) in provider.last.url.params.multi_items()
    assert "Ssp-TraceID" in err


def test_slots_refuses_a_window_over_fourteen_days_without_calling_the_practice(provider, capsys):
    root = "https://provider.example.nhs.uk/A20047/STU3/1/gpconnect"
    assert cli.main(["--root", root, "--asid", "1", "slots", "2016-08-01", "2016-08-31"]) == 2

    assert "at most 14 days" in capsys.readouterr().err
    assert provider.requests == []
