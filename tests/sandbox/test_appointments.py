"""Foundations and Appointment Management in the sandbox: the provider test pack's scenarios
(PEERS §9) as tables, the federated booking flow across practices, and the store's guarantees
(one booking per slot under real concurrency, bookings surviving a restart).

The sandbox's clock is fixed to Monday 22 March 2027, 07:00 UTC, so the four weeks of slots
cross the start of British Summer Time (Sunday 28 March 2027).
"""

from __future__ import annotations

import copy
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fhir.resources.STU3 import get_fhir_model_class
from starlette.types import ASGIApp

from gpconnect.auth import build_jwt
from gpconnect.config import Consumer, RequestingUser
from gpconnect.interactions import Interaction, Interactions
from gpconnect.sandbox import appointments
from gpconnect.sandbox.app import create_app
from gpconnect.sandbox.appointments import (
    APPOINTMENT_PROFILE,
    EXT_BOOKING_ORGANISATION,
    EXT_CANCELLATION_REASON,
    EXT_DELIVERY_CHANNEL,
    EXT_PRACTITIONER_ROLE,
    ORG_TYPE_SYSTEM,
    build_practice_book,
)
from gpconnect.sandbox.catalogue import PATIENTS_BY_SCENARIO, PRACTICES_BY_ODS, SandboxPatient
from gpconnect.sandbox.data import PRACTITIONERS
from gpconnect.sandbox.provider import Sandbox
from gpconnect.sandbox.records import SandboxRecord

START = datetime(2027, 3, 22, 7, 0, tzinfo=UTC)  # a Monday, before the clocks go forward
TODAY = START.date()
NHS = "https://fhir.nhs.uk/Id/nhs-number"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
PROFILE = "https://fhir.nhs.uk/STU3/StructureDefinition/"
RECORD = SandboxRecord(
    organisations=(), practitioners=PRACTITIONERS, documents=(), consultations=(), problems=()
)
# The consumer: a receptionist at Riverside (A20047) booking at the federation's practices.
CONSUMER = Consumer(
    asid="200000000359",
    ods_code="A20047",
    organisation_name="Riverside Medical Practice",
    issuer="https://viewer.example.nhs.uk/",
)
USER = RequestingUser(
    local_user_id="user-7",
    family_name="Okoro",
    given_names=("Ada",),
    prefixes=("Ms",),
    sds_user_id="687227875014",
    sds_role_profile_id="418654321012",
)
ALL_INCLUDES = [
    ("_include", "Slot:schedule"),
    ("_include:recurse", "Schedule:actor:Practitioner"),
    ("_include:recurse", "Schedule:actor:Location"),
    ("_include:recurse", "Location:managingOrganization"),
]
GP_PRACTICE = ("searchFilter", f"{ORG_TYPE_SYSTEM}|gp-practice")
URGENT_CARE = ("searchFilter", f"{ORG_TYPE_SYSTEM}|urgent-care")


def patient(scenario: str) -> SandboxPatient:
    return PATIENTS_BY_SCENARIO[scenario]


def day(offset: int) -> str:
    return (TODAY + timedelta(days=offset)).isoformat()


def spine_code(response: httpx.Response) -> str | None:
    try:
        return str(response.json()["issue"][0]["details"]["coding"][0]["code"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def stu3(resource: dict[str, Any]) -> None:
    """Parse a resource with the STU3 models: raises if it is not valid FHIR STU3."""
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def entries(response: httpx.Response, resource_type: str) -> list[dict[str, Any]]:
    return [
        e["resource"]
        for e in response.json().get("entry", [])
        if e["resource"]["resourceType"] == resource_type
    ]


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> float:
        return self.now.timestamp()


def make_sandbox(data_dir: Path, clock: Clock, base_url: str) -> Sandbox:
    return Sandbox(base_url=base_url, data_dir=data_dir, record=RECORD, clock=clock)


def make_app(sandbox: Sandbox) -> ASGIApp:
    # The whole sandbox app, so the answers carry its middleware (no-store, SSP, OperationOutcome 404s).
    return create_app(sandbox)


def gp_headers(
    sandbox: Sandbox, ods: str, interaction: Interaction, **extra: str
) -> dict[str, str]:
    practice = PRACTICES_BY_ODS[ods]
    token = build_jwt(
        consumer=CONSUMER,
        user=USER,
        audience=practice.service_root(sandbox.base_url, "appointments"),
        scope=interaction.scope,
        issued_at=int(sandbox.clock()),
    )
    headers = {
        "Accept": "application/fhir+json;charset=utf-8",
        "Authorization": f"Bearer {token}",
        "Ssp-TraceID": str(uuid.uuid4()),
        "Ssp-From": CONSUMER.asid,
        "Ssp-To": practice.asid,
        "Ssp-InteractionID": interaction.id,
    }
    if interaction.method in ("POST", "PUT"):
        headers["Content-Type"] = "application/fhir+json;charset=utf-8"
    return {**headers, **extra}


@dataclass
class Provider:
    """A consumer's view of the sandbox: GP Connect calls to any of its practices."""

    sandbox: Sandbox
    client: httpx.Client
    clock: Clock = field(default_factory=Clock)

    def call(
        self,
        method: str,
        ods: str,
        interaction: Interaction,
        path: str,
        *,
        params: list[tuple[str, str]] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        return self.client.request(
            method,
            f"{self.sandbox.base_url}/{ods}/STU3/1/gpconnect{path}",
            params=tuple(params or ()),
            json=body,
            headers=gp_headers(self.sandbox, ods, interaction, **(headers or {})),
        )

    def slots(self, ods: str, start: str, end: str, *extra: tuple[str, str]) -> httpx.Response:
        params = [("start", f"ge{start}"), ("end", f"le{end}"), ("status", "free"), *ALL_INCLUDES]
        return self.call("GET", ods, Interactions.SLOT_SEARCH, "/Slot", params=[*params, *extra])

    def find(self, ods: str, nhs_number: str) -> httpx.Response:
        return self.call(
            "GET",
            ods,
            Interactions.PATIENT_SEARCH,
            "/Patient",
            params=[("identifier", f"{NHS}|{nhs_number}")],
        )

    def register(self, ods: str, body: Any) -> httpx.Response:
        return self.call(
            "POST", ods, Interactions.PATIENT_REGISTER, "/Patient/$gpc.registerpatient", body=body
        )

    def book(self, ods: str, body: Any, **headers: str) -> httpx.Response:
        return self.call(
            "POST", ods, Interactions.APPOINTMENT_CREATE, "/Appointment", body=body, headers=headers
        )

    def read(self, ods: str, appointment_id: str) -> httpx.Response:
        return self.call(
            "GET", ods, Interactions.APPOINTMENT_READ, f"/Appointment/{appointment_id}"
        )

    def put(
        self, ods: str, interaction: Interaction, body: dict[str, Any], **headers: str
    ) -> httpx.Response:
        return self.call(
            "PUT", ods, interaction, f"/Appointment/{body['id']}", body=body, headers=headers
        )

    def patient_appointments(self, ods: str, patient_id: str, *starts: str) -> httpx.Response:
        return self.call(
            "GET",
            ods,
            Interactions.PATIENT_APPOINTMENTS,
            f"/Patient/{patient_id}/Appointment",
            params=[("start", s) for s in starts],
        )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def provider(tmp_path: Path, clock: Clock) -> Iterator[Provider]:
    with Server(tmp_path, clock) as server, httpx.Client(timeout=30) as client:
        yield Provider(server.sandbox, client, clock)


# --- Building requests --------------------------------------------------------------------------


@dataclass(frozen=True)
class FreeSlots:
    """A slot search answer, with each slot's Schedule's Location and Practitioner."""

    slots: list[dict[str, Any]]
    location_of: dict[str, str]  # schedule reference -> Location/id
    practitioner_of: dict[str, str]

    @classmethod
    def of(cls, response: httpx.Response) -> FreeSlots:
        assert response.status_code == 200, response.text
        schedules = {f"Schedule/{s['id']}": s for s in entries(response, "Schedule")}
        location_of: dict[str, str] = {}
        practitioner_of: dict[str, str] = {}
        for reference, schedule in schedules.items():
            for actor in schedule["actor"]:
                target = (
                    location_of if actor["reference"].startswith("Location/") else practitioner_of
                )
                target[reference] = actor["reference"]
        return cls(entries(response, "Slot"), location_of, practitioner_of)

    def run(self, length: int, service_type: str | None = None) -> list[dict[str, Any]]:
        """The first `length` slots that may be booked together (SPEC §3.3's adjacency rule)."""
        for index, first in enumerate(self.slots):
            if service_type and first["serviceType"][0]["text"] != service_type:
                continue
            run = [first]
            for following in self.slots[index + 1 :]:
                if len(run) == length:
                    break
                last = run[-1]
                if (
                    following["start"] == last["end"]
                    and following["schedule"] == first["schedule"]
                    and following["extension"] == first["extension"]
                    and following["serviceType"] == first["serviceType"]
                ):
                    run.append(following)
            if len(run) == length:
                return run
        raise AssertionError(f"no {length} adjacent free slots")

    def location(self, slot: dict[str, Any]) -> str:
        return self.location_of[slot["schedule"]["reference"]]

    def practitioner(self, slot: dict[str, Any]) -> str:
        return self.practitioner_of[slot["schedule"]["reference"]]


def booking_body(
    free: FreeSlots,
    slots: list[dict[str, Any]],
    patient_id: str,
    *,
    org_ods: str = "A20047",
    org_type: str | None = "gp-practice",
) -> dict[str, Any]:
    organisation: dict[str, Any] = {
        "resourceType": "Organization",
        "id": "1",
        "meta": {"profile": [PROFILE + "CareConnect-GPC-Organization-1"]},
        "identifier": [{"system": ODS, "value": org_ods}],
        "name": "Riverside Medical Practice",
        "telecom": [{"system": "phone", "value": "0113 496 0001"}],
    }
    if org_type:
        organisation["type"] = [{"coding": [{"system": ORG_TYPE_SYSTEM, "code": org_type}]}]
    return {
        "resourceType": "Appointment",
        "meta": {"profile": [APPOINTMENT_PROFILE]},
        "contained": [organisation],
        "extension": [{"url": EXT_BOOKING_ORGANISATION, "valueReference": {"reference": "#1"}}],
        "status": "booked",
        "description": "Blood pressure review",
        "start": slots[0]["start"],
        "end": slots[-1]["end"],
        "slot": [{"reference": f"Slot/{s['id']}"} for s in slots],
        "created": "2027-03-22T07:00:00+00:00",
        "participant": [
            {"actor": {"reference": f"Patient/{patient_id}"}, "status": "accepted"},
            {"actor": {"reference": free.location(slots[0])}, "status": "accepted"},
        ],
    }


def register_body(who: SandboxPatient, **changes: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "meta": {"profile": [PROFILE + "CareConnect-GPC-Patient-1"]},
        "identifier": [{"system": NHS, "value": who.nhs_number}],
        "name": [
            {
                "use": "official",
                "family": who.family,
                "given": list(who.given),
                "prefix": [who.prefix],
            }
        ],
        "gender": who.gender,
        "birthDate": who.birth_date.isoformat(),
        "telecom": [{"system": "phone", "value": "07700 900123", "use": "mobile"}],
    }
    for key, value in changes.items():
        if value is None:
            resource.pop(key, None)
        else:
            resource[key] = value
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": "registerPatient", "resource": resource}],
    }


# --- Metadata --------------------------------------------------------------------------------


def test_the_capability_statement_is_foundations_1_2_9_and_valid_stu3(provider: Provider) -> None:
    response = provider.call("GET", "B82617", Interactions.FOUNDATIONS_METADATA, "/metadata")

    assert response.status_code == 200
    statement = response.json()
    stu3(statement)
    assert (statement["version"], statement["fhirVersion"]) == ("1.2.9", "3.0.1")
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert {"Patient", "Location", "Appointment", "Slot"} <= set(resources)
    assert {"code": "update"} in resources["Appointment"]["interaction"]
    assert response.headers["Cache-Control"] == "no-store"


# --- Search for free slots -------------------------------------------------------------------

VALID_SLOT_QUERY = [
    ("start", f"ge{day(0)}"),
    ("end", f"le{day(6)}"),
    ("status", "free"),
    ("_include", "Slot:schedule"),
]


def without(name: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in VALID_SLOT_QUERY if k != name]


def replaced(name: str, value: str) -> list[tuple[str, str]]:
    return [(k, value if k == name else v) for k, v in VALID_SLOT_QUERY]


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        pytest.param(without("start"), 400, "BAD_REQUEST", id="no start"),
        pytest.param(without("end"), 400, "BAD_REQUEST", id="no end"),
        pytest.param(without("status"), 400, "BAD_REQUEST", id="no status"),
        pytest.param(without("_include"), 400, "BAD_REQUEST", id="no _include=Slot:schedule"),
        pytest.param(
            [*without("status"), ("Status", "free")], 400, "BAD_REQUEST", id="Status (wrong case)"
        ),
        pytest.param(
            [*VALID_SLOT_QUERY, ("start", f"ge{day(1)}")], 400, "BAD_REQUEST", id="start twice"
        ),
        pytest.param(replaced("status", "busy"), 422, "INVALID_PARAMETER", id="status busy"),
        pytest.param(replaced("end", f"le{day(15)}"), 422, "INVALID_PARAMETER", id="15 days"),
        pytest.param(
            replaced("end", f"le{day(-1)}"), 422, "INVALID_PARAMETER", id="end before start"
        ),
        pytest.param(replaced("start", f"gt{day(0)}"), 422, "INVALID_PARAMETER", id="start gt"),
        pytest.param(replaced("start", f"le{day(0)}"), 422, "INVALID_PARAMETER", id="start le"),
        pytest.param(replaced("end", f"ge{day(6)}"), 422, "INVALID_PARAMETER", id="end ge"),
        pytest.param(replaced("start", day(0)), 422, "INVALID_PARAMETER", id="no prefix"),
        pytest.param(
            replaced("start", "xx2027-03-22"), 422, "INVALID_PARAMETER", id="unknown prefix"
        ),
        pytest.param(replaced("start", "ge2027-03"), 422, "INVALID_PARAMETER", id="partial date"),
        pytest.param(replaced("start", "ge2027-02-30"), 422, "INVALID_PARAMETER", id="no such day"),
        pytest.param(
            replaced("start", "ge2027-03-22T09:00:00"), 422, "INVALID_PARAMETER", id="no offset"
        ),
        pytest.param(
            replaced("start", "ge2027-03-22T09:00:00+01:00"),
            422,
            "INVALID_PARAMETER",
            id="BST offset in GMT",
        ),
        pytest.param(
            replaced("start", "ge2027-03-22T09:00:00Z"), 422, "INVALID_PARAMETER", id="Z offset"
        ),
        pytest.param(
            [*VALID_SLOT_QUERY, ("searchFilter", "A20047")],
            422,
            "INVALID_PARAMETER",
            id="bad token",
        ),
        pytest.param(
            [*VALID_SLOT_QUERY, ("_include", "Slot:practitioner")],
            422,
            "INVALID_PARAMETER",
            id="unknown _include",
        ),
        pytest.param(replaced("end", f"le{day(14)}"), 200, None, id="exactly 14 days"),
        pytest.param(
            [
                ("start", "ge2027-03-22T09:00:00+00:00"),
                ("end", "le2027-03-30T12:00:00+01:00"),
                *VALID_SLOT_QUERY[2:],
            ],
            200,
            None,
            id="date-times with UK offsets",
        ),
        pytest.param(
            [*VALID_SLOT_QUERY, ("searchFilter", "https://example.org/disposition|Dx12")],
            200,
            None,
            id="unknown searchFilter system ignored",
        ),
    ],
)
def test_slot_search_parameters_are_checked_as_the_test_pack_expects(
    provider: Provider, query: list[tuple[str, str]], status: int, code: str | None
) -> None:
    response = provider.call("GET", "A20047", Interactions.SLOT_SEARCH, "/Slot", params=query)

    assert (response.status_code, spine_code(response)) == (status, code), response.text


def test_an_unencoded_plus_in_the_offset_is_refused_with_a_hint(provider: Provider) -> None:
    url = (
        f"{provider.sandbox.base_url}/A20047/STU3/1/gpconnect/Slot?start=ge2027-03-22T09:00:00+00:00"
        f"&end=le{day(3)}&status=free&_include=Slot:schedule"
    )
    response = provider.client.get(
        url, headers=gp_headers(provider.sandbox, "A20047", Interactions.SLOT_SEARCH)
    )

    assert (response.status_code, spine_code(response)) == (422, "INVALID_PARAMETER")
    assert "%2B" in response.json()["issue"][0]["diagnostics"]


def test_free_slots_come_with_their_schedule_practitioner_location_and_organisation(
    provider: Provider,
) -> None:
    response = provider.slots("A20047", day(0), day(4), GP_PRACTICE)

    assert response.status_code == 200
    bundle = response.json()
    stu3(bundle)
    assert bundle["type"] == "searchset"
    slots = entries(response, "Slot")
    assert slots
    low, high = (
        datetime.fromisoformat(f"{day(0)}T00:00:00+00:00"),
        datetime.fromisoformat(f"{day(5)}T00:00:00+00:00"),
    )
    for slot in slots:
        stu3(slot)
        assert slot["status"] == "free"
        assert (
            low
            <= datetime.fromisoformat(slot["start"])
            < datetime.fromisoformat(slot["end"])
            <= high
        )
        assert len(slot["id"]) <= 64
        assert slot["serviceType"][0]["text"]
        (channel,) = slot["extension"]
        assert channel["url"] == EXT_DELIVERY_CHANNEL
        assert channel["valueCode"] in ("In-person", "Telephone", "Video")
    assert {s["extension"][0]["valueCode"] for s in slots} == {"In-person", "Telephone", "Video"}
    schedules = entries(response, "Schedule")
    assert len(schedules) == 3
    for schedule in schedules:
        stu3(schedule)
        assert schedule["serviceCategory"]["text"]
        (role,) = schedule["extension"]
        assert role["url"] == EXT_PRACTITIONER_ROLE
        assert role["valueCodeableConcept"]["coding"][0]["code"].startswith("R")
    practitioners = entries(response, "Practitioner")
    assert len(practitioners) == 3
    assert all(p["gender"] in ("male", "female") and p["name"][0]["family"] for p in practitioners)
    locations = entries(response, "Location")
    assert {loc["id"] for loc in locations} == {"loc-a20047-main", "loc-a20047-branch"}
    assert all(loc["name"] and loc["address"]["line"] for loc in locations)
    (organisation,) = entries(response, "Organization")
    assert organisation["identifier"][0]["value"] == "A20047"
    for resource in [*practitioners, *locations, organisation]:
        stu3(resource)


def test_slot_times_carry_the_uk_offset_of_their_own_date(provider: Provider) -> None:
    # Friday 26 March is GMT; the clocks go forward on Sunday 28 March 2027.
    slots = entries(provider.slots("C81016", "2027-03-26", "2027-03-30"), "Slot")

    offsets = {s["start"][:10]: s["start"][-6:] for s in slots}
    assert offsets == {"2027-03-26": "+00:00", "2027-03-29": "+01:00", "2027-03-30": "+01:00"}
    assert all(s["end"][-6:] == offsets[s["start"][:10]] for s in slots)


def test_the_organisation_comes_back_whenever_slots_do_and_nothing_comes_back_otherwise(
    provider: Provider,
) -> None:
    only_schedules = provider.call(
        "GET", "B82617", Interactions.SLOT_SEARCH, "/Slot", params=VALID_SLOT_QUERY
    )
    weekend = provider.slots("B82617", "2027-03-27", "2027-03-28")

    assert {e["resource"]["resourceType"] for e in only_schedules.json()["entry"]} == {
        "Slot",
        "Schedule",
        "Organization",
    }
    assert weekend.status_code == 200
    assert weekend.json()["entry"] == []


def slot_types(response: httpx.Response) -> set[str]:
    return {s["serviceType"][0]["text"] for s in entries(response, "Slot")}


def test_search_filters_reveal_the_slots_kept_for_urgent_care_and_for_the_federation(
    provider: Provider,
) -> None:
    anyone = provider.slots("A20047", day(0), day(4))
    urgent_care = provider.slots("A20047", day(0), day(4), URGENT_CARE)
    federation = provider.slots("A20047", day(0), day(4), ("searchFilter", f"{ODS}|B82617"))
    hospital = provider.slots("A20047", day(0), day(4), ("searchFilter", f"{ODS}|RR8"))
    ignored = provider.slots(
        "A20047",
        day(0),
        day(4),
        ("searchFilter", "https://fhir.nhs.uk/STU3/ValueSet/x|Urgent Care"),
    )

    def ids(response: httpx.Response) -> set[str]:
        return {s["id"] for s in entries(response, "Slot")}

    assert "Urgent on the day" not in slot_types(anyone)
    assert "Urgent on the day" in slot_types(urgent_care)
    assert ids(anyone) < ids(urgent_care)
    assert ids(anyone) < ids(federation)
    assert ids(urgent_care) - ids(anyone) != ids(federation) - ids(anyone)
    assert ids(hospital) == ids(anyone) == ids(ignored)


def test_the_appointment_book_is_deterministic_and_has_a_realistic_mix() -> None:
    for ods in ("A20047", "B82617", "C81016"):
        book = build_practice_book(PRACTICES_BY_ODS[ods], PRACTITIONERS, TODAY)
        again = build_practice_book(PRACTICES_BY_ODS[ods], PRACTITIONERS, TODAY)

        assert [s.id for s in book.slots] == [s.id for s in again.slots]
        assert 2 <= len(book.schedules) <= 3
        assert {s.channel for s in book.slots} == {"In-person", "Telephone", "Video"}
        assert {int((s.end - s.start).total_seconds() // 60) for s in book.slots} == {10, 15}
        assert {s.start.date() for s in book.slots} <= {
            TODAY + timedelta(days=d) for d in range(28)
        }
        assert all(s.start.weekday() < 5 and len(s.id) <= 64 for s in book.slots)
        assert any(s.busy for s in book.slots) and not all(s.busy for s in book.slots)
        assert {s.practitioner.gender for s in book.schedules.values()} == {"male", "female"}
    assert book.slots[0].id == f"slot-C81016-{TODAY:%Y%m%d}-0830-p3"
    assert len(build_practice_book(PRACTICES_BY_ODS["B82617"], PRACTITIONERS, TODAY).sites) == 1
    assert build_practice_book(PRACTICES_BY_ODS["D99001"], PRACTITIONERS, TODAY).slots == ()


def test_a_location_can_be_read_and_an_unknown_one_is_not_found(provider: Provider) -> None:
    found = provider.call(
        "GET", "A20047", Interactions.LOCATION_READ, "/Location/loc-a20047-branch"
    )
    missing = provider.call(
        "GET", "A20047", Interactions.LOCATION_READ, "/Location/loc-b82617-main"
    )

    assert found.status_code == 200
    stu3(found.json())
    assert found.json()["managingOrganization"] == {"reference": "Organization/org-a20047"}
    assert (missing.status_code, spine_code(missing)) == (404, "NO_RECORD_FOUND")


# --- Find, read and register a patient ----------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        pytest.param([], 400, "BAD_REQUEST", id="no identifier"),
        pytest.param([("Identifier", f"{NHS}|9990000018")], 400, "BAD_REQUEST", id="wrong case"),
        pytest.param(
            [("identifier", f"{NHS}|9990000018")] * 2, 400, "BAD_REQUEST", id="two identifiers"
        ),
        pytest.param([("identifier", "9990000018")], 422, "INVALID_PARAMETER", id="no system"),
        pytest.param([("identifier", "|9990000018")], 422, "INVALID_PARAMETER", id="blank system"),
        pytest.param([("identifier", f"{NHS}|")], 422, "INVALID_PARAMETER", id="empty value"),
        pytest.param(
            [("identifier", "http://fhir.nhs.net/Id/nhs-number|9990000018")],
            422,
            "INVALID_PARAMETER",
            id="old system",
        ),
        pytest.param(
            [("identifier", f"{NHS}|9990000017")], 400, "INVALID_NHS_NUMBER", id="check digit"
        ),
    ],
)
def test_find_a_patient_checks_its_parameter_as_the_test_pack_expects(
    provider: Provider, params: list[tuple[str, str]], status: int, code: str
) -> None:
    response = provider.call(
        "GET", "A20047", Interactions.PATIENT_SEARCH, "/Patient", params=params
    )

    assert (response.status_code, spine_code(response)) == (status, code)


@pytest.mark.parametrize(
    ("scenario", "ods", "found"),
    [
        ("documents", "A20047", True),
        ("documents", "B82617", False),  # registered elsewhere: an empty searchset
        ("sensitive", "A20047", False),
        ("deceased-recent", "C81016", False),
        ("not-registered", "A20047", False),  # on PDS at Riverside, but Riverside has no record
    ],
)
def test_find_a_patient_returns_only_active_registrations_here(
    provider: Provider, scenario: str, ods: str, found: bool
) -> None:
    response = provider.find(ods, patient(scenario).nhs_number)

    assert response.status_code == 200
    patients = entries(response, "Patient")
    assert len(patients) == int(found)
    if found:
        stu3(patients[0])
        assert response.json()["id"] == response.request.headers["Ssp-TraceID"]


def test_a_registered_patient_can_be_read_and_an_unregistered_one_is_not_found(
    provider: Provider,
) -> None:
    read = provider.call("GET", "B82617", Interactions.PATIENT_READ, "/Patient/pat-9990000042")
    elsewhere = provider.call("GET", "A20047", Interactions.PATIENT_READ, "/Patient/pat-9990000042")

    assert read.status_code == 200
    assert read.json()["identifier"][0]["value"] == "9990000042"
    assert (elsewhere.status_code, spine_code(elsewhere)) == (404, "PATIENT_NOT_FOUND")


def mutate_patient(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def apply(body: dict[str, Any]) -> None:
        resource = body["parameter"][0]["resource"]
        for key, value in changes.items():
            if value is None:
                resource.pop(key, None)
            else:
                resource[key] = value

    return apply


def as_patient(scenario: str) -> Callable[[dict[str, Any]], None]:
    def apply(body: dict[str, Any]) -> None:
        body.update(register_body(patient(scenario)))

    return apply


NOT_REGISTERED = patient("not-registered")


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        pytest.param(
            mutate_patient(identifier=[{"system": NHS, "value": "9990000094"}]),
            400,
            "INVALID_NHS_NUMBER",
            id="invalid NHS number",
        ),
        pytest.param(mutate_patient(birthDate=None), 400, "BAD_REQUEST", id="no date of birth"),
        pytest.param(
            mutate_patient(name=[{"use": "usual", "family": "Nowak", "given": ["Tomasz"]}]),
            400,
            "BAD_REQUEST",
            id="no official name",
        ),
        pytest.param(
            mutate_patient(name=[{"use": "official", "given": ["Tomasz"]}]),
            400,
            "BAD_REQUEST",
            id="no family name",
        ),
        pytest.param(
            mutate_patient(identifier=[{"system": NHS, "value": "9999999999"}]),
            400,
            "INVALID_PATIENT_DEMOGRAPHICS",
            id="not on PDS",
        ),
        pytest.param(as_patient("sensitive"), 400, "INVALID_PATIENT_DEMOGRAPHICS", id="sensitive"),
        pytest.param(
            as_patient("deceased-recent"), 400, "INVALID_PATIENT_DEMOGRAPHICS", id="deceased"
        ),
        pytest.param(
            mutate_patient(name=[{"use": "official", "family": "Novak", "given": ["Tomasz"]}]),
            400,
            "INVALID_PATIENT_DEMOGRAPHICS",
            id="family name does not match PDS",
        ),
        pytest.param(
            mutate_patient(birthDate="1982-06-04"),
            400,
            "INVALID_PATIENT_DEMOGRAPHICS",
            id="birth date does not match PDS",
        ),
        pytest.param(
            as_patient("no-documents"), 409, "DUPLICATE_REJECTED", id="already registered"
        ),
        pytest.param(mutate_patient(active=True), 422, "INVALID_RESOURCE", id="extra field"),
        pytest.param(
            mutate_patient(
                address=[{"use": "home", "line": ["1 A Street"]}, {"use": "home", "line": ["2 B"]}]
            ),
            422,
            "INVALID_RESOURCE",
            id="two home addresses",
        ),
        pytest.param(
            mutate_patient(
                telecom=[
                    {"system": "phone", "value": "07700 900001", "use": "mobile"},
                    {"system": "phone", "value": "07700 900002", "use": "mobile"},
                ]
            ),
            422,
            "INVALID_RESOURCE",
            id="two mobile numbers",
        ),
        pytest.param(
            mutate_patient(
                extension=[
                    {"url": PROFILE + "Extension-CareConnect-GPC-NHSCommunication-1"},
                    {"url": PROFILE + "Extension-CareConnect-GPC-NHSCommunication-1"},
                ]
            ),
            422,
            "INVALID_RESOURCE",
            id="two nhsCommunication",
        ),
        pytest.param(
            lambda body: body["parameter"][0].update(name="patient"),
            422,
            "INVALID_RESOURCE",
            id="wrong parameter name",
        ),
        pytest.param(
            lambda body: body.update(resourceType="Bundle"),
            422,
            "INVALID_RESOURCE",
            id="not Parameters",
        ),
    ],
)
def test_register_a_patient_refuses_what_the_test_pack_refuses(
    provider: Provider, change: Callable[[dict[str, Any]], None], status: int, code: str
) -> None:
    body = register_body(NOT_REGISTERED)
    change(body)

    response = provider.register("B82617", body)

    assert (response.status_code, spine_code(response)) == (status, code), response.text


def test_registering_creates_a_temporary_registration_once(provider: Provider) -> None:
    first = provider.register("B82617", register_body(NOT_REGISTERED))
    again = provider.register("B82617", register_body(NOT_REGISTERED))
    found = provider.find("B82617", NOT_REGISTERED.nhs_number)
    elsewhere = provider.find("C81016", NOT_REGISTERED.nhs_number)

    assert first.status_code == 200
    bundle = first.json()
    stu3(bundle)
    assert bundle["type"] == "searchset"
    (registered,) = entries(first, "Patient")
    details = registered["extension"][0]["extension"]
    registration_type = next(d for d in details if d["url"] == "registrationType")
    assert registration_type["valueCodeableConcept"]["coding"][0]["code"] == "T"
    assert registered["managingOrganization"] == {"reference": "Organization/org-b82617"}
    assert registered["telecom"] == [{"system": "phone", "value": "07700 900123", "use": "mobile"}]
    assert (again.status_code, spine_code(again)) == (409, "DUPLICATE_REJECTED")
    assert entries(found, "Patient") == [registered]
    assert entries(elsewhere, "Patient") == []


def test_a_malformed_register_body_is_a_bad_request(provider: Provider) -> None:
    response = provider.client.post(
        f"{provider.sandbox.base_url}/B82617/STU3/1/gpconnect/Patient/$gpc.registerpatient",
        content=b"{not json",
        headers=gp_headers(provider.sandbox, "B82617", Interactions.PATIENT_REGISTER),
    )

    assert (response.status_code, spine_code(response)) == (400, "BAD_REQUEST")


# --- Book an appointment --------------------------------------------------------------------------

REGULAR = patient("no-documents")  # registered at Hillcrest (B82617)


@dataclass
class Booking:
    provider: Provider
    free: FreeSlots
    slots: list[dict[str, Any]]
    body: dict[str, Any]


@pytest.fixture
def booking(provider: Provider) -> Booking:
    free = FreeSlots.of(
        provider.slots("B82617", day(1), day(4), GP_PRACTICE, ("searchFilter", f"{ODS}|A20047"))
    )
    slots = free.run(2, "Routine appointment")
    return Booking(provider, free, slots, booking_body(free, slots, REGULAR.logical_id))


def drop(*path: str | int) -> Callable[[Booking], None]:
    def apply(b: Booking) -> None:
        target: Any = b.body
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return apply


def put(value: Any, *path: str | int) -> Callable[[Booking], None]:
    def apply(b: Booking) -> None:
        target: Any = b.body
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return apply


def other_slot(choose: Callable[[Booking], dict[str, Any]]) -> Callable[[Booking], None]:
    def apply(b: Booking) -> None:
        slot = choose(b)
        b.body["slot"] = [{"reference": f"Slot/{slot['id']}"}]
        b.body["start"], b.body["end"] = slot["start"], slot["end"]
        b.body["participant"][1]["actor"]["reference"] = b.free.location(slot)

    return apply


def non_adjacent(b: Booking) -> None:
    later = next(s for s in b.free.slots if s["start"] > b.slots[-1]["end"])
    b.body["slot"] = [
        {"reference": f"Slot/{b.slots[0]['id']}"},
        {"reference": f"Slot/{later['id']}"},
    ]
    b.body["end"] = later["end"]


def at_another_location(b: Booking) -> None:
    b.body["participant"][1]["actor"]["reference"] = "Location/loc-b82617-elsewhere"


def with_other_practitioner(b: Booking) -> None:
    others = {p for p in b.free.practitioner_of.values() if p != b.free.practitioner(b.slots[0])}
    b.body["participant"].append({"actor": {"reference": sorted(others)[0]}, "status": "accepted"})


def urgent_care_slot(b: Booking) -> dict[str, Any]:
    free = FreeSlots.of(b.provider.slots("B82617", day(1), day(4), URGENT_CARE))
    return next(s for s in free.slots if s["serviceType"][0]["text"] == "Urgent on the day")


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(drop("start"), id="no start"),
        pytest.param(drop("end"), id="no end"),
        pytest.param(drop("status"), id="no status"),
        pytest.param(put("proposed", "status"), id="status proposed"),
        pytest.param(drop("slot"), id="no slot"),
        pytest.param(put([], "slot"), id="empty slot list"),
        pytest.param(drop("participant"), id="no participants"),
        pytest.param(drop("participant", 0), id="no Patient participant"),
        pytest.param(drop("participant", 1), id="no Location participant"),
        pytest.param(drop("participant", 0, "status"), id="participant without status"),
        pytest.param(
            put(
                "https://a.example/B82617/STU3/1/gpconnect/Patient/pat-9990000042",
                "participant",
                0,
                "actor",
                "reference",
            ),
            id="absolute participant reference",
        ),
        pytest.param(drop("description"), id="no description"),
        pytest.param(put("x" * 101, "description"), id="description over 100"),
        pytest.param(put("x" * 501, "comment"), id="comment over 500"),
        pytest.param(drop("created"), id="no created"),
        pytest.param(put([{"text": "chest pain"}], "reason"), id="reason"),
        pytest.param(put([{"text": "GP"}], "specialty"), id="specialty"),
        pytest.param(put({"text": "Routine"}, "appointmentType"), id="typeCode"),
        pytest.param(put("1", "priority"), id="extra field"),
        pytest.param(
            put([{"system": "https://consumer.example/appointment"}], "identifier"),
            id="identifier without value",
        ),
        pytest.param(
            lambda b: b.body["extension"].append(
                {"url": EXT_CANCELLATION_REASON, "valueString": "no longer needed"}
            ),
            id="cancellation reason",
        ),
        pytest.param(drop("extension"), id="no booking organisation"),
        pytest.param(drop("contained", 0, "name"), id="booking organisation without name"),
        pytest.param(drop("contained", 0, "telecom"), id="booking organisation without telecom"),
        pytest.param(
            drop("contained", 0, "identifier", 0, "value"),
            id="booking organisation without ODS code value",
        ),
        pytest.param(
            put("https://a.example/Organization/1", "extension", 0, "valueReference", "reference"),
            id="absolute booking organisation reference",
        ),
        pytest.param(put("Slot/hello", "slot", 0, "reference"), id="slot that does not exist"),
        pytest.param(put("Slot/45555555##", "slot", 0, "reference"), id="slot reference not an id"),
        pytest.param(
            put("https://a.example/B82617/STU3/1/gpconnect/Slot/#12345", "slot", 0, "reference"),
            id="absolute slot reference",
        ),
        pytest.param(put("2027-03-23T08:00:00+00:00", "start"), id="start is not the first slot's"),
        pytest.param(put("2027-03-23T18:00:00+00:00", "end"), id="end is not the last slot's"),
        pytest.param(put("2027-03-23T09:00:00", "start"), id="start without offset"),
        pytest.param(non_adjacent, id="slots not adjacent"),
        pytest.param(at_another_location, id="not the slots' location"),
        pytest.param(with_other_practitioner, id="not the slots' practitioner"),
        pytest.param(
            put(
                f"Patient/{patient('documents').logical_id}", "participant", 0, "actor", "reference"
            ),
            id="patient not registered here",
        ),
        pytest.param(other_slot(urgent_care_slot), id="urgent-care slot booked by a GP practice"),
        pytest.param(lambda b: b.body.update(resourceType="Patient"), id="not an Appointment"),
    ],
)
def test_booking_refuses_what_the_test_pack_refuses(
    booking: Booking, change: Callable[[Booking], None]
) -> None:
    change(booking)

    response = booking.provider.book("B82617", booking.body)

    assert (response.status_code, spine_code(response)) == (422, "INVALID_RESOURCE"), response.text


def test_booking_an_already_booked_slot_is_a_duplicate(booking: Booking) -> None:
    first = booking.provider.book("B82617", booking.body)
    other_patient = copy.deepcopy(booking.body)
    other_patient["participant"][0]["actor"]["reference"] = (
        f"Patient/{patient('structured').logical_id}"
    )
    second = booking.provider.book("B82617", other_patient)

    assert first.status_code == 201
    assert (second.status_code, spine_code(second)) == (409, "DUPLICATE_REJECTED")


def test_booking_a_slot_the_practice_has_filled_itself_is_a_duplicate(booking: Booking) -> None:
    book = build_practice_book(PRACTICES_BY_ODS["B82617"], PRACTITIONERS, TODAY)
    taken = next(
        s for s in book.slots if s.busy and s.start.date() > TODAY and s.restriction is None
    )
    body = booking.body
    body["slot"] = [{"reference": f"Slot/{taken.id}"}]
    body["start"], body["end"] = taken.start.isoformat(), taken.end.isoformat()
    body["participant"][1]["actor"]["reference"] = f"Location/{taken.schedule.site.id}"

    response = booking.provider.book("B82617", body)

    assert (response.status_code, spine_code(response)) == (409, "DUPLICATE_REJECTED")


def test_a_slot_that_has_already_started_cannot_be_booked(booking: Booking) -> None:
    booking.provider.clock.now = datetime.fromisoformat(booking.slots[0]["start"]) + timedelta(
        minutes=1
    )

    response = booking.provider.book("B82617", booking.body)

    assert (response.status_code, spine_code(response)) == (422, "INVALID_RESOURCE")


def test_booking_answers_201_with_location_etag_and_the_appointment(booking: Booking) -> None:
    booking.body["comment"] = "Prefers mornings"
    booking.body["serviceType"] = [{"text": "ignored"}]  # accepted, and replaced by the slot's

    response = booking.provider.book("B82617", booking.body)

    assert response.status_code == 201, response.text
    appointment = response.json()
    stu3(appointment)
    assert response.headers["ETag"] == 'W/"1"'
    assert response.headers["Location"] == (
        f"{booking.provider.sandbox.base_url}/B82617/STU3/1/gpconnect/Appointment/{appointment['id']}/_history/1"
    )
    assert len(appointment["id"]) <= 64
    assert appointment["meta"]["versionId"] == "1"
    assert appointment["status"] == "booked"
    assert (appointment["start"], appointment["end"]) == (
        booking.slots[0]["start"],
        booking.slots[-1]["end"],
    )
    assert appointment["serviceType"] == [{"text": "Routine appointment"}]
    assert appointment["serviceCategory"]["text"]
    assert [e["url"] for e in appointment["extension"]] == [
        EXT_BOOKING_ORGANISATION,
        EXT_PRACTITIONER_ROLE,
        EXT_DELIVERY_CHANNEL,
    ]
    actors = {p["actor"]["reference"] for p in appointment["participant"]}
    assert booking.free.practitioner(booking.slots[0]) in actors  # added by the provider
    assert appointment["comment"] == "Prefers mornings"
    assert "reason" not in appointment and "specialty" not in appointment


def test_prefer_return_minimal_gives_an_empty_body_with_the_headers(booking: Booking) -> None:
    response = booking.provider.book("B82617", booking.body, Prefer="return=minimal")

    assert response.status_code == 201
    assert response.content == b""
    assert response.headers["ETag"] == 'W/"1"'
    assert "/Appointment/" in response.headers["Location"]


# --- Read, retrieve, amend and cancel -------------------------------------------------------------


@pytest.fixture
def booked(booking: Booking) -> dict[str, Any]:
    response = booking.provider.book("B82617", booking.body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def amended(appointment: dict[str, Any], **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(appointment)
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def cancelled(
    appointment: dict[str, Any], reason: str = "Patient is feeling better", **changes: Any
) -> dict[str, Any]:
    body = amended(appointment, **{"status": "cancelled", **changes})
    body["extension"].append({"url": EXT_CANCELLATION_REASON, "valueString": reason})
    return body


AMEND = Interactions.APPOINTMENT_AMEND
CANCEL = Interactions.APPOINTMENT_CANCEL


@pytest.mark.parametrize(
    ("interaction", "make", "if_match", "status", "code"),
    [
        pytest.param(
            AMEND,
            lambda a: amended(a, description="Changed"),
            'W/"7"',
            409,
            "FHIR_CONSTRAINT_VIOLATION",
            id="amend stale If-Match",
        ),
        pytest.param(
            AMEND,
            lambda a: amended(a, description="Changed"),
            "invalidEtag",
            409,
            "FHIR_CONSTRAINT_VIOLATION",
            id="amend invalid If-Match",
        ),
        pytest.param(
            CANCEL, cancelled, 'W/"2"', 409, "FHIR_CONSTRAINT_VIOLATION", id="cancel stale If-Match"
        ),
        pytest.param(
            AMEND,
            lambda a: amended(a, description="Changed"),
            None,
            400,
            "BAD_REQUEST",
            id="no If-Match",
        ),
        pytest.param(
            AMEND,
            lambda a: amended(a, priority=1),
            'W/"1"',
            422,
            "INVALID_RESOURCE",
            id="amend priority",
        ),
        pytest.param(
            AMEND,
            lambda a: amended(a, start="2027-03-30T09:00:00+01:00"),
            'W/"1"',
            422,
            "INVALID_RESOURCE",
            id="amend start",
        ),
        pytest.param(
            AMEND,
            lambda a: amended(a, slot=a["slot"][:1]),
            'W/"1"',
            422,
            "INVALID_RESOURCE",
            id="amend slots",
        ),
        pytest.param(
            AMEND,
            lambda a: amended(a, status="cancelled"),
            'W/"1"',
            422,
            "INVALID_RESOURCE",
            id="amend status",
        ),
        pytest.param(
            AMEND,
            lambda a: amended(a, description="x" * 101),
            'W/"1"',
            422,
            "INVALID_RESOURCE",
            id="amend long description",
        ),
        pytest.param(
            AMEND,
            lambda a: amended(
                a, extension=[*a["extension"], {"url": EXT_CANCELLATION_REASON, "valueString": "x"}]
            ),
            'W/"1"',
            422,
            "INVALID_RESOURCE",
            id="amend cancellation reason",
        ),
        pytest.param(
            AMEND,
            lambda a: amended(
                a,
                participant=[
                    *a["participant"],
                    {"actor": {"reference": "https://a.example/Location/2"}, "status": "accepted"},
                ],
            ),
            'W/"1"',
            422,
            "INVALID_RESOURCE",
            id="amend absolute participant",
        ),
        pytest.param(
            AMEND,
            lambda a: amended(a, id="appt-other"),
            'W/"1"',
            400,
            "BAD_REQUEST",
            id="amend id mismatch",
        ),
        pytest.param(
            CANCEL,
            lambda a: cancelled(a, description="Changed"),
            'W/"1"',
            422,
            "INVALID_RESOURCE",
            id="cancel and change description",
        ),
        pytest.param(
            CANCEL,
            lambda a: cancelled(a, comment="Changed"),
            'W/"1"',
            422,
            "INVALID_RESOURCE",
            id="cancel and change comment",
        ),
        pytest.param(
            CANCEL,
            lambda a: amended(a, status="cancelled"),
            'W/"1"',
            422,
            "INVALID_RESOURCE",
            id="cancel without reason",
        ),
        pytest.param(
            CANCEL,
            lambda a: cancelled(a, reason=""),
            'W/"1"',
            422,
            "INVALID_PARAMETER",
            id="cancel with empty reason",
        ),
        pytest.param(
            CANCEL,
            lambda a: cancelled(a, status="booked"),
            'W/"1"',
            422,
            "INVALID_RESOURCE",
            id="cancel without status",
        ),
        pytest.param(
            CANCEL,
            lambda a: cancelled(a, serviceType=[{"text": "Changed"}]),
            'W/"1"',
            422,
            "INVALID_RESOURCE",
            id="cancel and change type text",
        ),
    ],
)
def test_amend_and_cancel_refuse_what_the_test_pack_refuses(
    booking: Booking,
    booked: dict[str, Any],
    interaction: Interaction,
    make: Callable[[dict[str, Any]], dict[str, Any]],
    if_match: str | None,
    status: int,
    code: str,
) -> None:
    headers = {} if if_match is None else {"If-Match": if_match}
    body = make(booked)
    response = booking.provider.call(
        "PUT", "B82617", interaction, f"/Appointment/{booked['id']}", body=body, headers=headers
    )

    assert (response.status_code, spine_code(response)) == (status, code), response.text


def test_amend_and_cancel_accept_an_appointment_without_the_provider_set_elements(
    booking: Booking, booked: dict[str, Any]
) -> None:
    # Consumers written for 1.2.6 and earlier send no serviceCategory/serviceType back.
    body = amended(booked, serviceCategory=None, serviceType=None, comment="Wheelchair user")
    body["extension"] = body["extension"][:1]
    amend = booking.provider.put("B82617", AMEND, body, **{"If-Match": 'W/"1"'})
    cancel = booking.provider.put(
        "B82617", CANCEL, cancelled(amend.json(), serviceCategory=None), **{"If-Match": 'W/"2"'}
    )

    assert amend.status_code == 200, amend.text
    assert amend.json()["comment"] == "Wheelchair user"
    assert amend.json()["serviceType"] == booked["serviceType"]
    assert cancel.status_code == 200, cancel.text


def test_amend_and_cancel_honour_prefer_return_minimal(
    booking: Booking, booked: dict[str, Any]
) -> None:
    amend = booking.provider.put(
        "B82617",
        AMEND,
        amended(booked, description="Changed"),
        **{"If-Match": 'W/"1"', "Prefer": "return=minimal"},
    )
    cancel = booking.provider.put(
        "B82617",
        CANCEL,
        cancelled(amended(booked, description="Changed")),
        **{"If-Match": 'W/"2"', "Prefer": "return=minimal"},
    )
    read = booking.provider.read("B82617", booked["id"])

    assert (amend.status_code, amend.content, amend.headers["ETag"]) == (200, b"", 'W/"2"')
    assert (cancel.status_code, cancel.content, cancel.headers["ETag"]) == (200, b"", 'W/"3"')
    assert read.json()["status"] == "cancelled"
    assert read.json()["description"] == "Changed"


def test_a_cancelled_appointment_cannot_be_amended_or_cancelled_again(
    booking: Booking, booked: dict[str, Any]
) -> None:
    cancel = booking.provider.put("B82617", CANCEL, cancelled(booked), **{"If-Match": 'W/"1"'})
    amend = booking.provider.put(
        "B82617", AMEND, amended(cancel.json(), description="Changed"), **{"If-Match": 'W/"2"'}
    )
    again = booking.provider.put("B82617", CANCEL, cancelled(booked), **{"If-Match": 'W/"2"'})

    assert cancel.status_code == 200
    assert (amend.status_code, spine_code(amend)) == (422, "INVALID_RESOURCE")
    assert (again.status_code, spine_code(again)) == (422, "INVALID_RESOURCE")


def test_a_past_appointment_cannot_be_read_amended_or_cancelled(
    booking: Booking, booked: dict[str, Any]
) -> None:
    booking.provider.clock.now = datetime.fromisoformat(booked["start"]) + timedelta(minutes=5)

    read = booking.provider.read("B82617", booked["id"])
    amend = booking.provider.put(
        "B82617", AMEND, amended(booked, description="Changed"), **{"If-Match": 'W/"1"'}
    )
    cancel = booking.provider.put("B82617", CANCEL, cancelled(booked), **{"If-Match": 'W/"1"'})

    for response in (read, amend, cancel):
        assert (response.status_code, spine_code(response)) == (422, "INVALID_RESOURCE")


def test_an_unknown_appointment_is_not_found_and_other_practices_do_not_see_it(
    booking: Booking, booked: dict[str, Any]
) -> None:
    unknown = booking.provider.read("B82617", "appt-unknown")
    elsewhere = booking.provider.read("C81016", booked["id"])

    for response in (unknown, elsewhere):
        assert (response.status_code, spine_code(response)) == (404, "NO_RECORD_FOUND")


def test_a_put_with_any_other_interaction_is_a_bad_request(
    booking: Booking, booked: dict[str, Any]
) -> None:
    response = booking.provider.put(
        "B82617", Interactions.APPOINTMENT_READ, amended(booked), **{"If-Match": 'W/"1"'}
    )

    assert (response.status_code, spine_code(response)) == (400, "BAD_REQUEST")


@pytest.mark.parametrize(
    ("starts", "status", "code"),
    [
        pytest.param((f"ge{day(0)}", f"le{day(14)}"), 200, None, id="today to two weeks"),
        pytest.param((f"ge{day(0)}",), 422, "INVALID_PARAMETER", id="one start"),
        pytest.param((), 422, "INVALID_PARAMETER", id="no start"),
        pytest.param(
            (f"ge{day(0)}", f"le{day(3)}", f"le{day(4)}"),
            422,
            "INVALID_PARAMETER",
            id="three starts",
        ),
        pytest.param((f"ge{day(0)}", f"ge{day(4)}"), 422, "INVALID_PARAMETER", id="ge twice"),
        pytest.param(
            (f"ge{day(-1)}", f"le{day(4)}"), 422, "INVALID_PARAMETER", id="from yesterday"
        ),
        pytest.param((f"ge{day(5)}", f"le{day(4)}"), 422, "INVALID_PARAMETER", id="le before ge"),
        pytest.param(
            (f"ge{day(0)}T00:00:00+00:00", f"le{day(4)}"), 422, "INVALID_PARAMETER", id="date-time"
        ),
        pytest.param((f"gt{day(0)}", f"le{day(4)}"), 422, "INVALID_PARAMETER", id="gt prefix"),
        pytest.param((f"ge{day(0)}", "le2027-04-31"), 422, "INVALID_PARAMETER", id="no such day"),
    ],
)
def test_retrieving_a_patients_appointments_checks_the_date_range(
    provider: Provider, starts: tuple[str, ...], status: int, code: str | None
) -> None:
    response = provider.patient_appointments("B82617", REGULAR.logical_id, *starts)

    assert (response.status_code, spine_code(response)) == (status, code), response.text


def test_retrieving_appointments_of_a_patient_not_registered_here_is_not_found(
    provider: Provider,
) -> None:
    response = provider.patient_appointments(
        "B82617", "pat-9990000018", f"ge{day(0)}", f"le{day(7)}"
    )

    assert (response.status_code, spine_code(response)) == (404, "PATIENT_NOT_FOUND")


# --- The federated flow -------------------------------------------------------------------------


def test_a_federated_booking_from_search_to_cancellation_across_two_practices(
    provider: Provider,
) -> None:
    who = NOT_REGISTERED
    filters = (GP_PRACTICE, ("searchFilter", f"{ODS}|{CONSUMER.ods_code}"))

    # 1. Free slots at Hillcrest (B82617), as Riverside (A20047) sees them.
    free = FreeSlots.of(provider.slots("B82617", day(1), day(7), *filters))
    slots = free.run(2, "Routine appointment")

    # 2. The patient is not known at Hillcrest, so they are registered there (temporary).
    assert entries(provider.find("B82617", who.nhs_number), "Patient") == []
    registered = provider.register("B82617", register_body(who))
    assert registered.status_code == 200
    (found,) = entries(provider.find("B82617", who.nhs_number), "Patient")
    patient_id = found["id"]

    # 3. Book two adjacent slots.
    booked = provider.book("B82617", booking_body(free, slots, patient_id))
    assert booked.status_code == 201, booked.text
    appointment = booked.json()
    booked_ids = {s["id"] for s in slots}
    still_free = FreeSlots.of(provider.slots("B82617", day(1), day(7), *filters))
    assert not booked_ids & {s["id"] for s in still_free.slots}

    # 4. Read it back.
    read = provider.read("B82617", appointment["id"])
    assert read.status_code == 200
    assert read.headers["ETag"] == 'W/"1"'
    assert read.json() == appointment

    # 5. Amend the description and comment, as read.
    amend = provider.put(
        "B82617",
        AMEND,
        amended(read.json(), description="Diabetes review", comment="Bring your meter"),
        **{"If-Match": read.headers["ETag"]},
    )
    assert amend.status_code == 200, amend.text
    assert amend.headers["ETag"] == 'W/"2"'
    assert (amend.json()["description"], amend.json()["comment"]) == (
        "Diabetes review",
        "Bring your meter",
    )
    assert amend.json()["meta"]["versionId"] == "2"

    # 6. The patient's appointments at Hillcrest.
    listed = provider.patient_appointments("B82617", patient_id, f"ge{day(0)}", f"le{day(14)}")
    assert listed.status_code == 200
    assert [a["id"] for a in entries(listed, "Appointment")] == [appointment["id"]]
    stu3(listed.json())

    # 7. The same patient, registered and booked at Meadowbank (C81016) too.
    assert provider.register("C81016", register_body(who)).status_code == 200
    meadowbank = FreeSlots.of(provider.slots("C81016", day(1), day(7), *filters))
    other = meadowbank.run(1)
    assert provider.book("C81016", booking_body(meadowbank, other, patient_id)).status_code == 201
    assert (
        len(
            entries(
                provider.patient_appointments("C81016", patient_id, f"ge{day(0)}", f"le{day(14)}"),
                "Appointment",
            )
        )
        == 1
    )

    # 8. Cancel at Hillcrest, with a reason: the slots are free again.
    cancel = provider.put(
        "B82617", CANCEL, cancelled(amend.json(), reason="Seen elsewhere"), **{"If-Match": 'W/"2"'}
    )
    assert cancel.status_code == 200, cancel.text
    result = cancel.json()
    stu3(result)
    assert result["status"] == "cancelled"
    assert result["meta"]["versionId"] == "3"
    assert {"url": EXT_CANCELLATION_REASON, "valueString": "Seen elsewhere"} in result["extension"]
    again_free = FreeSlots.of(provider.slots("B82617", day(1), day(7), *filters))
    assert booked_ids <= {s["id"] for s in again_free.slots}

    # 9. Cancelled appointments are still listed; a stale ETag is refused.
    listed = provider.patient_appointments("B82617", patient_id, f"ge{day(0)}", f"le{day(14)}")
    assert [a["status"] for a in entries(listed, "Appointment")] == ["cancelled"]
    stale = provider.put(
        "B82617", AMEND, amended(amend.json(), description="Late change"), **{"If-Match": 'W/"2"'}
    )
    assert (stale.status_code, spine_code(stale)) == (409, "FHIR_CONSTRAINT_VIOLATION")


# --- The store ------------------------------------------------------------------------------------


def test_bookings_and_registrations_survive_a_new_sandbox_on_the_same_data_directory(
    tmp_path: Path, booking: Booking
) -> None:
    first = booking.provider.book("B82617", booking.body)
    assert first.status_code == 201
    assert booking.provider.register("B82617", register_body(NOT_REGISTERED)).status_code == 200

    with Server(tmp_path) as restarted, httpx.Client(timeout=30) as client:
        after = Provider(restarted.sandbox, client)
        read = after.read("B82617", first.json()["id"])
        again = after.book("B82617", booking.body)
        found = after.find("B82617", NOT_REGISTERED.nhs_number)

    assert read.status_code == 200
    assert read.json() == first.json()
    assert (again.status_code, spine_code(again)) == (409, "DUPLICATE_REJECTED")
    assert len(entries(found, "Patient")) == 1


def race(post: Callable[[], httpx.Response], contenders: int) -> list[int]:
    """Send `post` from that many threads at once; return the statuses."""
    barrier = threading.Barrier(contenders)
    statuses: list[int] = []
    lock = threading.Lock()

    def contender() -> None:
        barrier.wait()
        response = post()
        with lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=contender) for _ in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return sorted(statuses)


class Server:
    """The appointment routes under uvicorn, on an ephemeral loopback port, in a thread."""

    def __init__(self, data_dir: Path, clock: Clock | None = None) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        base_url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.sandbox = make_sandbox(data_dir, clock or Clock(), base_url)
        config = uvicorn.Config(make_app(self.sandbox), log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()


def test_two_consumers_racing_for_one_slot_over_real_http_get_one_201_and_one_409(
    tmp_path: Path,
) -> None:
    with Server(tmp_path) as server, httpx.Client(timeout=30) as client:
        consumer = Provider(server.sandbox, client)
        free = FreeSlots.of(consumer.slots("B82617", day(1), day(3), GP_PRACTICE))
        body = booking_body(free, free.run(1), REGULAR.logical_id)

        def post() -> httpx.Response:
            with httpx.Client(timeout=30) as own:
                return Provider(server.sandbox, own).book("B82617", body)

        statuses = race(post, 2)

    assert statuses == [201, 409]


def test_many_consumers_sharing_the_database_through_separate_sandboxes_book_a_slot_once(
    tmp_path: Path,
) -> None:
    with (
        Server(tmp_path) as one,
        Server(tmp_path) as other,
        httpx.Client(timeout=30) as first,
        httpx.Client(timeout=30) as second,
    ):
        providers = [Provider(one.sandbox, first), Provider(other.sandbox, second)]
        free = FreeSlots.of(providers[0].slots("A20047", day(1), day(3), GP_PRACTICE))
        body = booking_body(free, free.run(2), patient("documents").logical_id)
        turn = iter(range(1000))

        def post() -> httpx.Response:
            return providers[next(turn) % 2].book("A20047", body)

        statuses = race(post, 8)

    assert statuses == [201] + [409] * 7


def test_the_store_is_kept_on_the_sandbox_and_uses_wal(provider: Provider) -> None:
    provider.slots("A20047", day(0), day(1))

    store = provider.sandbox.extensions["appointments"]
    assert isinstance(store, appointments.AppointmentStore)
    assert store.path == provider.sandbox.data_dir / "appointments.sqlite3"
    import sqlite3

    with sqlite3.connect(store.path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection.close()


def test_the_slot_window_moves_with_the_sandbox_day(provider: Provider) -> None:
    provider.clock.now = START + timedelta(days=7)
    response = provider.slots("A20047", day(7), day(8))

    assert {s["start"][:10] for s in entries(response, "Slot")} == {day(7), day(8)}
    assert date.fromisoformat(
        entries(response, "Schedule")[0]["planningHorizon"]["start"][:10]
    ) == TODAY + timedelta(days=7)
