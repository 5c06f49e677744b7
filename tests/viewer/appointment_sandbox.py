"""Fixtures for the appointment tests: a fresh sandbox per test, and the federation in the DB.

Bookings persist in the sandbox's data directory, so each test gets its own sandbox (one
uvicorn thread on a loopback port, with no documents generated: appointments need only
the practitioners). Its dates are relative to today, so no test names a date.
Import the fixtures into a test module to use them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.core.cache import cache

from gpconnect import (
    Capability,
    ClientConfig,
    Consumer,
    GPConnectClient,
    RequestingUser,
    Slot,
    SpineDirectory,
)
from gpconnect.sandbox.catalogue import PRACTICES
from gpconnect.sandbox.data import PRACTITIONERS
from gpconnect.sandbox.provider import Sandbox
from gpconnect.sandbox.records import SandboxRecord
from tests.sandbox.conftest import _ThreadedServer, bound_socket
from tests.viewer.conftest import _Recorder
from viewer.models import FederationPractice

RECORD = SandboxRecord(
    organisations=(), practitioners=PRACTITIONERS, documents=(), consultations=(), problems=()
)
SPINE_CODES = "https://fhir.nhs.uk/STU3/CodeSystem/Spine-ErrorOrWarningCode-1"
SSP_CODES = "https://fhir.nhs.uk/StructureDefinition/spine-operationoutcome-1"
# Our organisation when booking: searchFilter, and the booking organisation.
PHONE = "0113 496 0999"


@dataclass
class AppointmentSandbox:
    base_url: str
    sandbox: Sandbox
    paths: list[str] = field(default_factory=list)
    posts: list[str] = field(default_factory=list)  # the paths POSTed to, in order
    refuse_bookings: bool = False
    fail_after_booking: bool = False
    # Answer POST /Appointment with this (status, body) instead of the practice's answer;
    # with `reply_after_booking` the practice gets the POST (and books) first.
    booking_reply: tuple[int, bytes] | None = None
    reply_after_booking: bool = False

    def bookings_posted(self) -> int:
        return sum(1 for path in self.posts if path.endswith("/Appointment"))

    def today(self) -> date:
        return self.sandbox.today()

    def booked_slot_ids(self, ods: str) -> frozenset[str]:
        from gpconnect.sandbox.appointments import appointment_store

        return appointment_store(self.sandbox).booked_slot_ids(ods)


class _Gateway(_Recorder):
    """Records POSTs, and plays a gateway that fails when a test asks it to.

    `refuse_bookings`: a POST /Appointment is answered 503 before reaching the practice.
    `fail_after_booking`: once a booking has been sent, every GP Connect request is a 503.
    `booking_reply`: a POST /Appointment is answered with it, after the practice booked
    (`reply_after_booking`) or without reaching the practice.
    """

    def __init__(self, app: Any, running: AppointmentSandbox) -> None:
        super().__init__(app, running.paths)
        self.running = running

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        booking = scope["method"] == "POST" and path.endswith("/Appointment")
        refused = booking and self.running.refuse_bookings
        gp_connect = "/STU3/" in path
        if gp_connect and not booking and self.running.fail_after_booking:
            refused = refused or self.running.bookings_posted() > 0
        if scope["method"] == "POST":
            self.running.posts.append(path)
        if refused:
            self.paths.append(path)
            body = b"<html><body><h1>503 Service Unavailable</h1></body></html>"
            await _answer(send, 503, body, b"text/html")
            return
        reply = self.running.booking_reply if booking else None
        if reply is None:
            await super().__call__(scope, receive, send)
            return
        if self.running.reply_after_booking:

            async def swallow(message: Any) -> None:
                pass  # the practice's own answer is lost on the way back

            await super().__call__(scope, receive, swallow)
        else:
            self.paths.append(path)
        await _answer(send, reply[0], reply[1], b"application/fhir+json")


async def _answer(send: Any, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"cache-control", b"no-store")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def operation_outcome(code: str, *, system: str = SPINE_CODES) -> bytes:
    """An OperationOutcome with one issue of this code, as a practice or the SSP sends it."""
    return json.dumps(
        {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": "exception",
                    "details": {"coding": [{"system": system, "code": code, "display": code}]},
                }
            ],
        }
    ).encode()


def point_settings_at(running: AppointmentSandbox, settings: Any) -> None:
    """Point the app's Spine settings, and our booking details, at this sandbox."""
    settings.GPCONNECT_SDS_URL = f"{running.base_url}/spine-directory/FHIR/R4"
    settings.GPCONNECT_PDS_URL = f"{running.base_url}/personal-demographics/FHIR/R4"
    settings.GPCONNECT_ORGANISATION_TYPE = "gp-practice"
    settings.GPCONNECT_ORGANISATION_PHONE = PHONE


@pytest.fixture
def appointments_gp(tmp_path: Path, settings: Any) -> Iterator[AppointmentSandbox]:
    """A fresh sandbox, with the app's Spine settings and our booking details pointed at it."""
    sock = bound_socket()
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    running = AppointmentSandbox(
        base_url, Sandbox(base_url=base_url, data_dir=tmp_path, record=RECORD)
    )
    server = _ThreadedServer(running.sandbox, sock)
    server.server.config.app = _Gateway(server.server.config.app, running)
    point_settings_at(running, settings)
    cache.clear()
    with server:
        yield running
    cache.clear()


@pytest.fixture
def federation(db: None) -> list[FederationPractice]:
    """The sandbox's three federated practices, as an administrator would set them up."""
    return [
        FederationPractice.objects.create(
            ods_code=p.ods, display_name=p.name, organisation_type="gp-practice"
        )
        for p in PRACTICES
        if p.federated
    ]


# Another consumer of the same practices: not this service, so none of its locks apply.
ELSEWHERE = ClientConfig(
    consumer=Consumer(
        asid="999999999999",
        ods_code="X99999",
        organisation_name="Test",
        issuer="http://127.0.0.1:8000",
        organisation_type="gp-practice",
        organisation_phone=PHONE,
    )
)


def _elsewhere(running: AppointmentSandbox, ods: str, http: httpx.Client) -> GPConnectClient:
    sds = SpineDirectory(f"{running.base_url}/spine-directory/FHIR/R4", http=http)
    return GPConnectClient.for_practice(
        ELSEWHERE,
        user=RequestingUser(local_user_id="test", family_name="Test"),
        ods_code=ods,
        directory=sds,
        http=http,
    )


def first_free_slot(
    running: AppointmentSandbox, ods: str, *, slot_type: str = "Routine appointment"
) -> Slot:
    """The first free slot of a type at a practice from tomorrow, as a consumer finds it."""
    with httpx.Client(timeout=30) as http:
        client = _elsewhere(running, ods, http)
        tomorrow = running.today() + timedelta(days=1)
        slots = client.search_free_slots(tomorrow, tomorrow + timedelta(days=6)).slots
    return next(s for s in slots if s.slot_type == slot_type)


def book_elsewhere(running: AppointmentSandbox, ods: str, slot: Slot, nhs_number: str) -> None:
    """Book the slot for a patient registered at the practice, through another system."""
    with httpx.Client(timeout=30) as http:
        client = _elsewhere(running, ods, http)
        found = client.find_patient(nhs_number, capability=Capability.APPOINTMENTS).patient
        assert found is not None
        client.book_appointment(patient_id=found.id, slots=[slot], description="Elsewhere")
