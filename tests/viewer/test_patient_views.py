"""The patient page: banner, callouts, the htmx documents table, filters and errors."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils.html import escape

from tests.viewer.conftest import RecordingSandbox, make_user, nhs_number_of
from viewer.models import AuditEvent
from viewer.services import DocumentFilters

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def open_patient(client: Client, scenario: str) -> str:
    response = client.post(reverse("viewer:home"), {"nhs_number": nhs_number_of(scenario)})
    assert response.status_code == 302, response.content.decode()
    return str(response["Location"])


def titles(html: str) -> list[str]:
    body = html.split('<tbody class="nhsuk-table__body">', 1)[1]
    rows = re.findall(r"<tr.*?</tr>", body, flags=re.S)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)[3] for row in rows]
    # Each title is a link to its document page.
    return [re.sub(r"^\s*<a [^>]*>", "", cell).split("<")[0].strip() for cell in cells]


def aria_sort(html: str) -> dict[str, str]:
    headers = re.findall(r'aria-sort="(\w+)">\s*<a [^>]*>([^<]+)</a>', html)
    return {label: value for value, label in headers}


@pytest.fixture
def documents_url(gp: RecordingSandbox, clinician_client: Client) -> str:
    return open_patient(clinician_client, "documents")


def test_anonymous_users_are_sent_to_sign_in(client: Client) -> None:
    response = client.get(reverse("viewer:patient", kwargs={"context_id": "anything"}))
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_an_auditor_gets_403(auditor: User) -> None:
    client = Client()
    client.force_login(auditor)
    response = client.get(reverse("viewer:patient", kwargs={"context_id": "anything"}))
    assert response.status_code == 403


def test_the_full_page_has_the_banner_in_cui_order_and_the_table(
    clinician_client: Client, documents_url: str
) -> None:
    response = clinician_client.get(documents_url)
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" in html and 'id="documents"' in html
    banner = html.split('class="viewer-patient-banner"', 1)[1].split("</section>", 1)[0]
    order = [
        banner.index(text) for text in ("WHITAKER, Margaret Ann (Mrs)", "Born", "Gender", "NHS No.")
    ]
    assert order == sorted(order)
    assert "14-Mar-1948" in banner and "Female" in banner and "999 000 0018" in banner
    assert "Showing 1–25 of 43 documents" in html
    assert "Some documents are not for the patient" in html
    assert "Not for patient" in html and "External" in html
    assert "filtered:" not in html


def test_patient_pages_are_never_cached_and_vary_on_htmx(
    clinician_client: Client, documents_url: str
) -> None:
    for extra in ({}, HTMX):
        response = clinician_client.get(documents_url, **extra)  # type: ignore[arg-type]
        assert "no-store" in response["Cache-Control"]
        assert "HX-Request" in response["Vary"]


def test_an_htmx_request_gets_only_the_documents_region(
    clinician_client: Client, documents_url: str
) -> None:
    html = clinician_client.get(documents_url, **HTMX).content.decode()  # type: ignore[arg-type]
    assert html.lstrip().startswith('<div id="documents"')
    assert "<html" not in html and "viewer-patient-banner" not in html
    assert 'hx-target="#documents"' in html and 'hx-push-url="true"' in html
    assert "Showing 1–25 of 43 documents" in html


@pytest.mark.parametrize("column", ["created", "indexed", "type", "title", "author", "format"])
def test_sorting_by_each_column_changes_the_order_and_sets_aria_sort(
    clinician_client: Client, documents_url: str, column: str
) -> None:
    default = clinician_client.get(documents_url).content.decode()
    assert aria_sort(default)["Document date"] == "descending"
    ascending = clinician_client.get(f"{documents_url}?sort={column}&dir=asc").content.decode()
    descending = clinician_client.get(f"{documents_url}?sort={column}&dir=desc").content.decode()
    label = {
        "created": "Document date",
        "indexed": "Filed",
        "type": "Type",
        "title": "Title",
        "author": "Author",
        "format": "Format and size",
    }[column]
    assert aria_sort(ascending)[label] == "ascending"
    assert aria_sort(descending)[label] == "descending"
    assert list(aria_sort(ascending).values()).count("none") == 5
    assert titles(ascending) != titles(descending)
    # The header link flips the direction, and works without JavaScript (a real href).
    flipped = documents_url + escape(DocumentFilters(sort=column, direction="desc").query())
    assert f'href="{flipped}" hx-get="{flipped}">{label}</a>' in ascending


def test_titles_sort_alphabetically(clinician_client: Client, documents_url: str) -> None:
    html = clinician_client.get(f"{documents_url}?sort=title&dir=asc").content.decode()
    shown = [t for t in titles(html) if t and t[0].isalpha()]
    assert shown == sorted(shown, key=str.casefold)


def test_the_second_page_shows_the_rest(clinician_client: Client, documents_url: str) -> None:
    html = clinician_client.get(f"{documents_url}?page=2").content.decode()
    assert "Showing 26–43 of 43 documents" in html
    assert 'aria-current="page">2</a>' in html
    assert len(titles(html)) == 18
    beyond = clinician_client.get(f"{documents_url}?page=99").content.decode()
    assert "Showing 26–43 of 43 documents" in beyond


def test_filters_narrow_the_list_and_say_so(clinician_client: Client, documents_url: str) -> None:
    html = clinician_client.get(f"{documents_url}?keyword=letter").content.decode()
    assert "(filtered: keyword “letter”)" in html
    assert "Clear filters" in html
    count = int(re.search(r"of (\d+) documents?", html).group(1))  # type: ignore[union-attr]
    assert 0 < count < 43
    by_date = clinician_client.get(f"{documents_url}?date=1y").content.decode()
    assert "(filtered: last year)" in by_date
    author = clinician_client.get(f"{documents_url}?author=RR8").content.decode()
    assert "(filtered: author organisation RR8)" in author
    assert '<option value="RR8" selected>' in author


def test_invalid_filters_show_the_error_summary(
    clinician_client: Client, documents_url: str
) -> None:
    html = clinician_client.get(
        f"{documents_url}?date=custom&from=2022-02-01&to=2022-01-01"
    ).content.decode()
    assert "There is a problem" in html
    assert "The end date must be the same as or after the start date" in html
    assert "Showing" not in html


def test_a_dissenting_patient_shows_the_no_consent_panel_with_a_trace_id(
    gp: RecordingSandbox, clinician_client: Client
) -> None:
    url = open_patient(clinician_client, "no-consent")
    for extra in ({}, HTMX):
        response = clinician_client.get(url, **extra)  # type: ignore[arg-type]
        html = response.content.decode()
        assert response.status_code == 200
        assert "The patient has not agreed to share their record" in html
        assert "give them this trace ID" in html
        assert "BRENNAN, Siobhan (Miss)" in html or extra


def test_a_recently_deceased_patient_has_the_deceased_callout(
    gp: RecordingSandbox, clinician_client: Client
) -> None:
    html = clinician_client.get(open_patient(clinician_client, "deceased-recent")).content.decode()
    assert "This patient has died" in html


def test_another_users_patient_url_is_a_404_and_audited(
    gp: RecordingSandbox, clinician_client: Client
) -> None:
    url = open_patient(clinician_client, "documents")
    other = Client()
    other.force_login(make_user("other", "Clinician"))
    assert other.get(url).status_code == 404
    assert AuditEvent.objects.filter(action="access_denied", username="other").exists()


def test_no_nhs_number_appears_in_any_link_on_the_page(
    clinician_client: Client, documents_url: str
) -> None:
    html = clinician_client.get(documents_url).content.decode()
    for url in re.findall(r'(?:href|hx-get|action)="([^"]*)"', html):
        assert "9990000018" not in url and "999 000 0018" not in url


def test_documents_that_cannot_be_retrieved_are_rows_with_a_grey_tag_and_the_reason(
    gp: RecordingSandbox, clinician_client: Client
) -> None:
    html = clinician_client.get(open_patient(clinician_client, "placeholders")).content.decode()
    assert '<strong class="nhsuk-tag nhsuk-tag--grey">Not available</strong>' in html
    assert "viewer-documents__reason" in html


def test_a_patient_with_no_documents_says_so(
    gp: RecordingSandbox, clinician_client: Client
) -> None:
    html = clinician_client.get(open_patient(clinician_client, "no-documents")).content.decode()
    assert "No documents were returned by the practice" in html


def test_documents_over_the_configured_size_limit_are_marked_too_large_to_retrieve(
    gp: RecordingSandbox, clinician_client: Client, documents_url: str, settings: Any
) -> None:
    # The retrieval limit is GPCONNECT_MAX_DOCUMENT_MB, not a number in a template.
    nhs_number = nhs_number_of("documents")
    sizes = [d.size for d in gp.sandbox.record.documents if d.patient_nhs == nhs_number and d.file]
    assert max(sizes) > 1024 * 1024

    def both_pages() -> str:
        return "".join(
            clinician_client.get(documents_url + query).content.decode()
            for query in ("", "?page=2")
        )

    settings.GPCONNECT_MAX_DOCUMENT_MB = 1
    assert "Over 1 MB: too large to retrieve through GP Connect." in both_pages()
    settings.GPCONNECT_MAX_DOCUMENT_MB = 50
    assert "too large to retrieve" not in both_pages()
