"""The second tab: documents linked from consultations and problems (Access Record Structured)."""

from __future__ import annotations

import re
from datetime import date

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from gpconnect.sandbox.catalogue import Faults
from tests.viewer.conftest import RecordingSandbox, make_user, nhs_number_of
from viewer.models import AuditEvent
from viewer.presenters import short_date

pytestmark = pytest.mark.django_db


def open_patient(client: Client, scenario: str) -> str:
    response = client.post(reverse("viewer:home"), {"nhs_number": nhs_number_of(scenario)})
    assert response.status_code == 302, response.content.decode()
    return str(response["Location"])


def linked_url(patient_url: str) -> str:
    return patient_url + "linked/"


def rows(html: str) -> list[str]:
    body = html.split('<tbody class="nhsuk-table__body">', 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<tr.*?</tr>", body, flags=re.S)


def cell_texts(row: str) -> list[str]:
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)
    return [" ".join(re.sub(r"<[^>]+>", "", cell).split()) for cell in cells]


@pytest.fixture
def structured_url(gp: RecordingSandbox, clinician_client: Client) -> str:
    return linked_url(open_patient(clinician_client, "structured"))


def test_the_tab_lists_documents_with_the_consultation_or_problem_that_links_them(
    gp: RecordingSandbox, clinician_client: Client, structured_url: str
) -> None:
    response = clinician_client.get(structured_url)
    html = response.content.decode()
    assert response.status_code == 200
    table = [cell_texts(row) for row in rows(html)]
    by_title = {cells[3]: cells for cells in table}
    hba1c = by_title["HbA1c and renal function"]
    # The sandbox dates its record relative to today.
    assert re.search(r"Consultation on \d\d-\w{3}-\d{4}: Surgery consultation", hba1c[0])
    assert "Problem: Type 2 diabetes mellitus" in hba1c[0]
    created = next(d for d in gp.sandbox.record.documents if d.title == hba1c[3]).created
    assert hba1c[1:3] == [short_date(date.fromisoformat(created[:10])), "Laboratory report"]
    assert f"{len(table)} documents linked from consultations and problems" in html
    # The most recent consultation first; documents linked only from problems last.
    consulted = [re.search(r"Consultation on (\S+)", cells[0]) for cells in table]
    assert consulted[0] is not None and consulted[-1] is None


def test_the_tab_is_marked_as_the_current_one_and_links_back_to_all_documents(
    clinician_client: Client, structured_url: str
) -> None:
    html = clinician_client.get(structured_url).content.decode()
    tabs = html.split('class="viewer-tabs"', 1)[1].split("</nav>", 1)[0]
    assert re.search(r'href="[^"]*/linked/" aria-current="page"', tabs)
    all_documents = structured_url.removesuffix("linked/")
    assert f'href="{all_documents}">All documents' in tabs


def test_a_linked_document_opens_on_the_same_document_page(
    clinician_client: Client, structured_url: str
) -> None:
    html = clinician_client.get(structured_url).content.decode()
    link = re.search(r'<a href="([^"]+)">HbA1c and renal function</a>', html)
    assert link is not None
    response = clinician_client.get(link.group(1))
    assert response.status_code == 200
    assert '<h1 class="nhsuk-heading-l">HbA1c and renal function</h1>' in response.content.decode()


def test_the_structured_record_is_asked_of_its_own_endpoint_and_the_list_is_audited(
    gp: RecordingSandbox, clinician_client: Client, structured_url: str
) -> None:
    clinician_client.get(structured_url)
    assert any(p.endswith("/structured/Patient/$gpc.getstructuredrecord") for p in gp.paths)
    event = AuditEvent.objects.filter(action="list_documents").latest("when")
    assert event.outcome == "success"
    assert event.nhs_number == nhs_number_of("structured")
    assert "linked documents from the structured record" in event.detail
    assert event.trace_id


def test_a_receptionist_sees_only_the_linked_letters(gp: RecordingSandbox, db: None) -> None:
    client = Client()
    client.force_login(make_user("frontdesk", "Receptionist"))
    html = client.get(linked_url(open_patient(client, "structured"))).content.decode()
    titles = [cell_texts(row)[3] for row in rows(html)]
    assert titles == ["Diabetic eye screening result"]
    assert "Your role shows letters only." in html


def test_a_practice_fault_shows_the_error_panel_with_a_trace_id(
    gp: RecordingSandbox, clinician_client: Client, structured_url: str
) -> None:
    gp.sandbox.faults[nhs_number_of("structured")] = Faults(error_rate=1.0)
    try:
        response = clinician_client.get(structured_url)
    finally:
        del gp.sandbox.faults[nhs_number_of("structured")]
    html = response.content.decode()
    assert response.status_code == 200
    assert "viewer-error-panel" in html
    assert "viewer-trace-id" in html
    event = AuditEvent.objects.filter(action="list_documents").latest("when")
    assert event.outcome == "failure"


def test_another_users_patient_is_a_404(
    clinician_client: Client, structured_url: str, db: None
) -> None:
    other = Client()
    other.force_login(make_user("otherclinician", "Clinician"))
    assert other.get(structured_url).status_code == 404


def test_anonymous_users_are_sent_to_sign_in_and_auditors_refused(
    client: Client, auditor: User
) -> None:
    url = reverse("viewer:linked", kwargs={"context_id": "anything"})
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    client.force_login(auditor)
    assert client.get(url).status_code == 403


def test_signing_out_purges_the_cached_lists_and_clears_the_browser(
    clinician_client: Client, structured_url: str
) -> None:
    clinician_client.get(structured_url)
    clinician_client.get(structured_url.removesuffix("linked/"))
    keys = clinician_client.session["viewer_cached_lists"]
    assert len(keys) == 2
    assert all(cache.get(key) is not None for key in keys)
    response = clinician_client.post(reverse("logout"))
    assert response.status_code == 302
    assert response["Clear-Site-Data"] == '"cache", "storage"'
    assert all(cache.get(key) is None for key in keys)
