"""The sandbox can make a booking and then lose the reply: "committed, then timed out".

A consumer must then read the patient's appointments before saying anything, and the
sandbox has to be able to put it in that position for real, over a socket.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from gpconnect import (
    Capability,
    ClientConfig,
    Consumer,
    GPConnectClient,
    ProviderUnavailable,
    RetryPolicy,
    SpineDirectory,
    Timeouts,
)
from gpconnect.sandbox.catalogue import PATIENTS_BY_SCENARIO, Faults
from gpconnect.sandbox.cli import build_parser, configured_faults
from gpconnect.sandbox.data import PRACTITIONERS
from gpconnect.sandbox.provider import Sandbox
from gpconnect.sandbox.records import SandboxRecord

from .conftest import _ThreadedServer, bound_socket
from .requests import USER

CONFIG = ClientConfig(
    consumer=Consumer(
        asid="200000000359",
        ods_code="X99999",
        organisation_name="Test booking organisation",
        issuer="https://viewer.example.nhs.uk/",
        organisation_type="gp-practice",
        organisation_phone="0113 496 0999",
    ),
    retry=RetryPolicy(attempts=1),
)
RECORD = SandboxRecord(
    organisations=(), practitioners=PRACTITIONERS, documents=(), consultations=(), problems=()
)


@dataclass
class Running:
    sandbox: Sandbox
    http: httpx.Client

    def practice(self, ods: str, config: ClientConfig = CONFIG) -> GPConnectClient:
        sds = SpineDirectory(f"{self.sandbox.base_url}/spine-directory/FHIR/R4", http=self.http)
        return GPConnectClient.for_practice(
            config, user=USER, ods_code=ods, directory=sds, http=self.http
        )


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    sock = bound_socket()
    sandbox = Sandbox(
        base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", data_dir=tmp_path, record=RECORD
    )
    with _ThreadedServer(sandbox, sock), httpx.Client(timeout=30) as http:
        yield Running(sandbox, http)


def test_a_booking_whose_reply_is_held_back_times_out_but_is_made_once(running):
    ods = "B82617"
    practice = running.practice(ods)
    today = running.sandbox.today()
    slot = next(
        s
        for s in practice.search_free_slots(
            today + timedelta(days=1), today + timedelta(days=7)
        ).slots
    )
    nhs_number = PATIENTS_BY_SCENARIO["no-documents"].nhs_number
    patient = practice.find_patient(nhs_number, capability=Capability.APPOINTMENTS).patient
    running.sandbox.faults[ods] = Faults(write_reply_delay_seconds=1.5)
    impatient = running.practice(ods, replace(CONFIG, timeouts=Timeouts(read=0.3)))

    began = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="did not respond in time"):
        impatient.book_appointment(patient_id=patient.id, slots=[slot], description="Review")
    assert time.monotonic() - began < 1.4  # the consumer gave up before the reply came

    # Reads are not held back: the booking is there, exactly once.
    listed = practice.search_appointments(patient.id, today, today + timedelta(days=14))
    assert [a.slot_ids for a in listed.appointments] == [(slot.id,)]
    free = practice.search_free_slots(slot.start.date(), slot.start.date()).slots
    assert slot.id not in {s.id for s in free}


def test_a_held_back_reply_still_arrives_for_a_patient_consumer(running):
    ods = "B82617"
    practice = running.practice(ods)
    today = running.sandbox.today()
    slot = practice.search_free_slots(today + timedelta(days=1), today + timedelta(days=7)).slots[0]
    patient = practice.find_patient(
        PATIENTS_BY_SCENARIO["no-documents"].nhs_number, capability=Capability.APPOINTMENTS
    ).patient
    running.sandbox.faults[ods] = Faults(write_reply_delay_seconds=0.5)

    began = time.monotonic()
    booked = practice.book_appointment(patient_id=patient.id, slots=[slot], description="Review")

    assert time.monotonic() - began >= 0.5
    assert booked.slot_ids == (slot.id,)


def test_the_write_reply_delay_comes_from_the_command_line_by_practice():
    args = build_parser().parse_args(["--write-reply-delay", "B82617=40", "--latency", "A20047=1"])
    faults = configured_faults(args.latency, args.error_rate, args.write_reply_delay)
    assert faults["B82617"] == Faults(write_reply_delay_seconds=40.0)
    assert faults["A20047"] == Faults(latency_seconds=1.0)


def test_a_booking_held_back_before_it_is_made_is_missing_at_first_then_made_once(running):
    ods = "B82617"
    practice = running.practice(ods)
    today = running.sandbox.today()
    slot = practice.search_free_slots(today + timedelta(days=1), today + timedelta(days=7)).slots[0]
    patient = practice.find_patient(
        PATIENTS_BY_SCENARIO["no-documents"].nhs_number, capability=Capability.APPOINTMENTS
    ).patient
    running.sandbox.faults[ods] = Faults(write_commit_delay_seconds=1.0)
    impatient = running.practice(ods, replace(CONFIG, timeouts=Timeouts(read=0.3)))

    with pytest.raises(ProviderUnavailable, match="did not respond in time"):
        impatient.book_appointment(patient_id=patient.id, slots=[slot], description="Review")

    # Looking straight away finds nothing: the practice has not made the booking yet…
    window = (today, today + timedelta(days=14))
    assert practice.search_appointments(patient.id, *window).appointments == ()
    # …but it makes it all the same, once.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        booked = practice.search_appointments(patient.id, *window).appointments
        if booked:
            break
        time.sleep(0.2)
    assert [a.slot_ids for a in booked] == [(slot.id,)]


def test_the_write_commit_delay_comes_from_the_command_line_by_practice():
    args = build_parser().parse_args(["--write-commit-delay", "B82617=20"])
    faults = configured_faults(
        args.latency, args.error_rate, args.write_reply_delay, args.write_commit_delay
    )
    assert faults["B82617"] == Faults(write_commit_delay_seconds=20.0)
