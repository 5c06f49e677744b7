"""The sandbox's synthetic record: organisations, staff, documents, consultations, problems.

`load_or_generate(data_dir, today=...)` is what the sandbox calls at start: it reuses the
manifest written by an earlier run (same generator version, every file present) or generates
everything afresh. Generation is deterministic: the same `today` gives the same manifest and
the same file bytes on every machine.

Layout of the data directory:

    manifest.json                          the SandboxRecord, plus version and date
    documents/<scenario>/<document id>.<ext>
    documents/many-documents/shared-<n>.<ext>   the few files 1,500 documents share
    documents/stress/<document id>.pdf     20 MiB and 100 MiB (only with include_stress)

Generation writes into a temporary directory inside `data_dir` and moves the result into
place at the end, manifest last, so a crash never leaves a manifest that points at missing or
half-written files. A lock file serialises processes that start at the same time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from gpconnect.sandbox import files
from gpconnect.sandbox.catalogue import (
    PATIENTS_BY_SCENARIO,
    PRACTICES,
    PRACTICES_BY_ODS,
    SandboxPatient,
)
from gpconnect.sandbox.records import (
    ConsultationRecord,
    DocumentRecord,
    Organisation,
    Practitioner,
    ProblemRecord,
    SandboxRecord,
)

__all__ = [
    "GENERATOR_VERSION",
    "MANIFEST_NAME",
    "MAX_RETRIEVABLE_SIZE",
    "ORGANISATIONS",
    "PRACTITIONERS",
    "file_path",
    "generate",
    "load_or_generate",
    "record_from_json",
    "record_to_json",
]

# Bump whenever generated content changes, so existing data directories are regenerated.
GENERATOR_VERSION = 1
MANIFEST_NAME = "manifest.json"
DOCUMENTS_DIR = "documents"
MAX_RETRIEVABLE_SIZE = 5 * 1024 * 1024  # SPEC §1.3: Retrieve a document stops at 5MB
STRESS_SIZES = (20 * files.MIB, 100 * files.MIB)
MANY_DOCUMENTS = 1500
_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://gpconnect-sandbox.invalid/")


# --------------------------------------------------------------------------- organisations


@dataclass(frozen=True)
class _Site:
    """An organisation outside the practices, with the letterhead its letters carry."""

    ods: str
    name: str
    address: tuple[str, ...]
    phone: str


# Real NHS organisations' names and ODS codes; the private clinic and the laboratory are made
# up (NDD.. codes). Telephone numbers are in Ofcom's drama ranges.
_SITES: tuple[_Site, ...] = (
    _Site(
        "RR8",
        "Leeds Teaching Hospitals NHS Trust",
        ("St James's University Hospital", "Beckett Street", "Leeds LS9 7TF"),
        "0113 496 0100",
    ),
    _Site(
        "RCD",
        "Harrogate and District NHS Foundation Trust",
        ("Harrogate District Hospital", "Lancaster Park Road", "Harrogate HG2 7SX"),
        "01632 960 200",
    ),
    _Site(
        "RXF",
        "Mid Yorkshire Teaching NHS Trust",
        ("Pinderfields Hospital", "Aberford Road", "Wakefield WF1 4DG"),
        "01632 960 300",
    ),
    _Site(
        "RX8",
        "Yorkshire Ambulance Service NHS Trust",
        ("Springhill 2", "Brindley Way", "Wakefield WF2 0XQ"),
        "01632 960 400",
    ),
    _Site(
        "NDD01",
        "Dales Physiotherapy Clinic Ltd",
        ("Unit 4, Mill Yard", "Skipton BD23 1ZZ"),
        "01632 960 500",
    ),
    _Site(
        "NDD02",
        "Yorkshire Pathology Network Laboratory",
        ("Blood Sciences, Old Medical School", "Thoresby Place", "Leeds LS1 3EX"),
        "0113 496 0600",
    ),
)
_SITES_BY_ODS = {site.ods: site for site in _SITES}

ORGANISATIONS: tuple[Organisation, ...] = tuple(
    Organisation(id=p.organisation_id, ods=p.ods, name=p.name) for p in PRACTICES
) + tuple(Organisation(id=f"org-{s.ods.lower()}", ods=s.ods, name=s.name) for s in _SITES)
_ORGANISATION_NAMES = {o.ods: o.name for o in ORGANISATIONS}


# --------------------------------------------------------------------------- staff

# SDS job role codes (CareConnect-SDSJobRoleName-1). R0260 is the one the spec quotes; the
# others are plausible stand-ins for a synthetic record.
_GP_PARTNER = ("R0260", "General Medical Practitioner")
_SALARIED_GP = ("R0270", "Salaried General Practitioner")
_NURSE_PRACTITIONER = ("R0690", "Nurse Practitioner")
_CONSULTANT = ("R0050", "Consultant")
_PHYSIOTHERAPIST = ("R1070", "Physiotherapist")


@dataclass(frozen=True)
class _Staff:
    practitioner: Practitioner
    job_title: str  # what the letter's signature says
    department: str  # the letterhead's department, for hospital staff


def _staff(
    ods: str,
    number: int,
    prefix: str,
    given: str,
    family: str,
    gender: str,
    role: tuple[str, str],
    job_title: str,
    department: str = "",
) -> _Staff:
    practitioner = Practitioner(
        id=f"prac-{ods.lower()}-{number:02d}",
        family=family,
        given=given,
        prefix=prefix,
        gender=gender,
        sds_user_id=f"9990{sum(map(ord, ods)):04d}{number:04d}",
        role_code=role[0],
        role_display=role[1],
        organisation_ods=ods,
    )
    return _Staff(practitioner, job_title, department)


# fmt: off
_STAFF: tuple[_Staff, ...] = (
    # Riverside Medical Practice (Leeds)
    _staff("A20047", 1, "Dr", "Alun", "Hughes", "male", _GP_PARTNER, "GP Partner"),
    _staff("A20047", 2, "Dr", "Sarah", "Mitchell", "female", _SALARIED_GP, "Salaried GP"),
    _staff("A20047", 3, "Ms", "Joanne", "Clarke", "female", _NURSE_PRACTITIONER, "Advanced Nurse Practitioner"),
    _staff("A20047", 4, "Dr", "Kwame", "Mensah", "male", _SALARIED_GP, "Salaried GP"),
    # Hillcrest Surgery (Harrogate)
    _staff("B82617", 1, "Dr", "Helen", "Baxter", "female", _GP_PARTNER, "GP Partner"),
    _staff("B82617", 2, "Dr", "Imran", "Qureshi", "male", _GP_PARTNER, "GP Partner"),
    _staff("B82617", 3, "Mr", "Tom", "Fletcher", "male", _NURSE_PRACTITIONER, "Nurse Practitioner"),
    _staff("B82617", 4, "Dr", "Mei", "Lin", "female", _SALARIED_GP, "Salaried GP"),
    # Meadowbank Health Centre (Wakefield)
    _staff("C81016", 1, "Dr", "Robert", "Lang", "male", _GP_PARTNER, "GP Partner"),
    _staff("C81016", 2, "Dr", "Chloe", "Adeyemi", "female", _SALARIED_GP, "Salaried GP"),
    _staff("C81016", 3, "Mrs", "Priya", "Shah", "female", _NURSE_PRACTITIONER, "Nurse Practitioner"),
    # Oakfield Surgery (York)
    _staff("D99001", 1, "Dr", "Emma", "Walsh", "female", _GP_PARTNER, "GP Partner"),
    # Hospital consultants and other external authors
    _staff("RR8", 1, "Dr", "Priya", "Raman", "female", _CONSULTANT, "Consultant Cardiologist", "Department of Cardiology"),
    _staff("RR8", 2, "Dr", "Fiona", "Grant", "female", _CONSULTANT, "Consultant in Old Age Psychiatry", "Memory Assessment Service"),
    _staff("RR8", 3, "Dr", "Ben", "Ashworth", "male", _CONSULTANT, "Consultant Respiratory Physician", "Respiratory Medicine"),
    _staff("RCD", 1, "Mr", "James", "Whitfield", "male", _CONSULTANT, "Consultant Orthopaedic Surgeon", "Trauma and Orthopaedics"),
    _staff("RXF", 1, "Dr", "Aisha", "Rahman", "female", _CONSULTANT, "Consultant Dermatologist", "Department of Dermatology"),
    _staff("NDD01", 1, "Ms", "Laura", "Pickering", "female", _PHYSIOTHERAPIST, "Chartered Physiotherapist"),
    _staff("NDD02", 1, "Dr", "Martin", "Cole", "male", _CONSULTANT, "Consultant Chemical Pathologist", "Blood Sciences"),
)
# fmt: on
_STAFF_BY_ID = {s.practitioner.id: s for s in _STAFF}
PRACTITIONERS: tuple[Practitioner, ...] = tuple(s.practitioner for s in _STAFF)


def _usual_gp(practice_ods: str) -> Practitioner:
    return _STAFF_BY_ID[f"prac-{practice_ods.lower()}-01"].practitioner


# --------------------------------------------------------------------------- document types

_Type = tuple[str, str] | str  # a SNOMED (code, display), or text only

IP_DISCHARGE: _Type = ("824331000000106", "Inpatient final discharge letter")
DISCHARGE: _Type = ("373942005", "Discharge summary")
REFERRAL: _Type = ("3457005", "Patient referral")
CONSULTATION: _Type = ("371530004", "Clinical consultation report")
LABORATORY: _Type = ("4241000179101", "Laboratory report")
IMAGING: _Type = ("4201000179104", "Imaging report")
OPERATIVE: _Type = ("371526002", "Operative report")
PROCEDURE: _Type = ("371525003", "Clinical procedure report")
ENCOUNTER: _Type = ("371531000", "Report of clinical encounter")

_FILE_KINDS: dict[str, tuple[str, str]] = {
    # file kind: (content type, extension)
    "pdf": ("application/pdf", "pdf"),
    "bigpdf": ("application/pdf", "pdf"),
    "tiff": ("image/tiff", "tif"),
    "jpeg": ("image/jpeg", "jpg"),
    "png": ("image/png", "png"),
    "ecg": ("image/png", "png"),
    "bmp": ("image/bmp", "bmp"),
    "docx": ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx"),
    "rtf": ("application/rtf", "rtf"),
    "html": ("text/html", "html"),
    "txt": ("text/plain", "txt"),
    "xml": ("application/xml", "xml"),
    "wav": ("audio/wav", "wav"),
    "au": ("audio/x-au", "au"),
    "dat": ("application/octet-stream", "dat"),
}
# The one PDF that is just under the 5 MB retrieval limit (and under 5,000,000 bytes, so it is
# under the limit however "MB" is read).
BIG_PDF_TARGET = 4_850_000


@dataclass(frozen=True)
class _Doc:
    """What one generated document should be."""

    file: str  # a key of _FILE_KINDS
    letter: str  # the letter kind its content is composed from (files.LETTER_KINDS)
    title: str | None
    type: _Type
    author: str | None  # a practitioner id, an ODS code (organisation only), or None
    days_ago: int
    pages: int = 1
    no_created: bool = False
    nopat: str | None = None
    listed_twice: bool = False
    encounter: str | None = None
    fault: str | None = None
    to: str | None = None  # ODS code the letter is addressed to (internal letters)


@dataclass(frozen=True)
class _Placeholder:
    """A document listed without a file (too large, or not available yet)."""

    title: str
    type: _Type
    author: str | None
    days_ago: int
    content_type: str
    size: int
    reason: str | None = None  # default: the EMIS "greater than maximum allowable" wording


def _too_large(size: int) -> str:
    return f"File size {size} bytes greater than maximum allowable (5MB)"


# --------------------------------------------------------------------------- scenarios


def _documents_scenario(enc: Callable[[int], str]) -> tuple[_Doc, ...]:
    """About 40 documents of every kind, with the quirks real providers send."""
    gp, salaried, np_ = "prac-a20047-01", "prac-a20047-02", "prac-a20047-03"
    # fmt: off
    return (
        _Doc("pdf", "discharge", "Inpatient discharge summary - community-acquired pneumonia", IP_DISCHARGE, "prac-rr8-03", 45, pages=4),
        _Doc("pdf", "discharge", "Discharge summary: right knee arthroscopy (day case)", DISCHARGE, "prac-rcd-01", 1650, pages=3),
        _Doc("pdf", "referral", "Referral to cardiology - exertional chest pain", REFERRAL, gp, 400, pages=2, encounter=enc(1), to="RR8"),
        _Doc("pdf", "referral", "Physiotherapy referral - knee osteoarthritis", REFERRAL, salaried, 1900, encounter=enc(2), to="NDD01"),
        _Doc("pdf", "clinic", "Cardiology outpatient letter", CONSULTATION, "prac-rr8-01", 330, pages=2),
        _Doc("pdf", "clinic", "Dermatology clinic letter - pigmented lesion left forearm", CONSULTATION, "prac-rxf-01", 2600),
        _Doc("pdf", "results", "Blood results: FBC, U&E, LFT, HbA1c", LABORATORY, "NDD02", 60),
        _Doc("pdf", "results", "Blood results - annual diabetes review", LABORATORY, "prac-ndd02-01", 420, pages=2),
        _Doc("pdf", "imaging", "X-ray right knee (weight-bearing)", IMAGING, "RCD", 2000),
        _Doc("pdf", "operative", "Operation note: right knee arthroscopy", OPERATIVE, "prac-rcd-01", 1655, pages=3),
        _Doc("bigpdf", "letter", "Wound clinic photographs - leg ulcer series (high resolution)", "Clinical photograph", "prac-rxf-01", 95),
        _Doc("pdf", "physio", "Physiotherapy discharge letter", "Letter", "prac-ndd01-01", 1850, pages=2),
        _Doc("pdf", "ambulance", "Patient report form - fall at home", "Ambulance record", "RX8", 50),
        _Doc("pdf", "memory", "Memory clinic assessment", CONSULTATION, "prac-rr8-02", 700, pages=6),
        _Doc("pdf", "safeguarding", "Multidisciplinary team meeting minutes", "Meeting minutes", gp, 250, pages=2, nopat="meta"),
        _Doc("docx", "letter", "Letter from patient's daughter (third-party information)", "Correspondence", "A20047", 260, nopat="label"),
        _Doc("pdf", "clinic", "Résumé — clinic letter", CONSULTATION, "prac-rxf-01", 2590),
        _Doc("pdf", "letter", "!@£$%^&*()_==-][}[ Document Title", "Letter", "RR8", 3000),
        _Doc("txt", "note", "../../etc/passwd", "Telephone message", np_, 90),
        _Doc("docx", "clinic", "<b>bold</b> care plan", "Care plan", np_, 120),
        _Doc("pdf", "clinic", None, CONSULTATION, "prac-rr8-01", 900, pages=2),
        _Doc("pdf", "results", "Urine albumin:creatinine ratio", LABORATORY, "NDD02", 430, listed_twice=True),
        _Doc("tiff", "letter", "Scanned correspondence (old hospital letter)", "Scanned document", "A20047", 3400, no_created=True),
        _Doc("jpeg", "note", "Photograph of rash on forearm", "Photograph", salaried, 150, encounter=enc(3)),
        _Doc("ecg", "note", "12-lead ECG", "ECG", np_, 410, encounter=enc(1)),
        _Doc("png", "note", "Leg ulcer photograph (week 4)", "Photograph", np_, 80),
        _Doc("bmp", "note", "Photograph of mole, left forearm (dermatoscope)", "Photograph", "prac-rxf-01", 2610),
        _Doc("docx", "letter", "Letter to DVLA regarding fitness to drive", "Letter", gp, 690),
        _Doc("rtf", "referral", "Referral to district nursing team", REFERRAL, np_, 75),
        _Doc("rtf", "letter", "Letter from adult social care", "Correspondence", None, 1300, no_created=True),
        _Doc("html", "discharge", "Electronic discharge summary (eDischarge)", DISCHARGE, "prac-rr8-03", 44, pages=2),
        _Doc("html", "clinic", "Emergency department attendance summary", ENCOUNTER, "RXF", 1200),
        _Doc("txt", "note", "Telephone message: pharmacy query", "Telephone message", salaried, 30),
        _Doc("xml", "results", "Pathology report (XML): lipid profile", LABORATORY, "NDD02", 800),
        _Doc("xml", "results", "Pathology report (XML): thyroid function", LABORATORY, "prac-ndd02-01", 1500),
        _Doc("wav", "note", "Dictated letter (audio)", "Audio recording", "prac-rr8-01", 335),
        _Doc("au", "note", "Voicemail from patient", "Audio recording", "A20047", 20),
        _Doc("dat", "note", "Spirometry device export", "Attachment", np_, 560),
        _Doc("pdf", "clinic", "Orthopaedic clinic letter", CONSULTATION, "prac-rcd-01", 2100, pages=5),
        _Doc("pdf", "referral", "Mental health referral", REFERRAL, gp, 1000, nopat="label", to="RR8"),
        _Doc("pdf", "letter", "Letter from police (not for disclosure to patient)", "Correspondence", None, 1010, nopat="meta", no_created=True),
        _Doc("pdf", "letter", "Statement of fitness for work", "Fit note", salaried, 3600),
        _Doc("pdf", "clinic", "Joint injection procedure note", PROCEDURE, "prac-a20047-04", 2300),
    )
    # fmt: on


def _placeholders_scenario() -> tuple[tuple[_Placeholder, ...], tuple[_Doc, ...]]:
    placeholders = (
        _Placeholder(
            "MRI lumbar spine - images and report", IMAGING, "RR8", 210, "application/pdf", 18551238
        ),
        _Placeholder(
            "Scanned Lloyd George record",
            "Scanned document",
            "A20047",
            1400,
            "image/tiff",
            48217603,
        ),
        _Placeholder("Gait assessment video", "Video", "NDD01", 640, "video/mpeg", 87441920),
        _Placeholder(
            "Discharge pack with photographs",
            DISCHARGE,
            "prac-rcd-01",
            980,
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            7340217,
        ),
        _Placeholder(
            "Dermatology photographs (high resolution)",
            "Photograph",
            "prac-rxf-01",
            75,
            "image/jpeg",
            6291579,
        ),
        _Placeholder(
            "Letter awaiting scanning",
            "Scanned document",
            "A20047",
            3,
            "application/pdf",
            0,
            reason="Document is being scanned and is not yet available",
        ),
    )
    small = (
        _Doc("pdf", "results", "Blood results: renal function", LABORATORY, "NDD02", 120),
        _Doc(
            "pdf",
            "referral",
            "Referral to spinal surgery",
            REFERRAL,
            "prac-a20047-01",
            230,
            pages=2,
            to="RR8",
        ),
    )
    return placeholders, small


def _short_scenarios() -> dict[str, tuple[_Doc, ...]]:
    return {
        "deceased-recent": (
            _Doc(
                "pdf",
                "discharge",
                "Discharge summary - end of life care",
                IP_DISCHARGE,
                "prac-rr8-03",
                40,
                pages=3,
            ),
            _Doc("docx", "letter", "Palliative care plan", "Care plan", "prac-c81016-01", 60),
            _Doc("pdf", "results", "Blood results", LABORATORY, "NDD02", 35),
            _Doc(
                "tiff",
                "letter",
                "Do not attempt CPR form (scanned)",
                "Scanned document",
                "C81016",
                70,
            ),
            _Doc("pdf", "letter", "Notification of death", "Letter", "RXF", 9),
        ),
        "no-consent": (
            _Doc("pdf", "clinic", "Gynaecology clinic letter", CONSULTATION, "RR8", 300),
            _Doc("pdf", "results", "Blood results", LABORATORY, "NDD02", 310),
            _Doc("jpeg", "note", "Photograph of rash", "Photograph", "prac-a20047-02", 40),
        ),
        "slow": (
            _Doc(
                "pdf",
                "clinic",
                "Cardiology clinic letter",
                CONSULTATION,
                "prac-rr8-01",
                200,
                pages=2,
            ),
            _Doc("pdf", "referral", "Referral to ophthalmology", REFERRAL, "prac-c81016-02", 380),
            _Doc("pdf", "results", "Blood results", LABORATORY, "NDD02", 190),
            _Doc("docx", "letter", "Letter to insurer", "Letter", "prac-c81016-01", 900),
            _Doc("png", "note", "Photograph of ankle swelling", "Photograph", "prac-c81016-03", 60),
        ),
        "faulty": (
            _Doc("pdf", "clinic", "Dermatology clinic letter", CONSULTATION, "prac-rxf-01", 150),
            _Doc("jpeg", "note", "Photograph of eczema", "Photograph", "prac-c81016-02", 45),
            _Doc(
                "pdf",
                "discharge",
                "Discharge summary (stops half way)",
                DISCHARGE,
                "RXF",
                220,
                pages=3,
                fault="stops-half-way",
            ),
            _Doc(
                "pdf",
                "referral",
                "Referral letter (invalid base64)",
                REFERRAL,
                "prac-c81016-01",
                400,
                fault="invalid-base64",
            ),
            _Doc(
                "docx",
                "letter",
                "Letter (not JSON)",
                "Letter",
                "prac-c81016-02",
                500,
                fault="non-json",
            ),
            _Doc(
                "pdf",
                "results",
                "Blood results (drips slowly)",
                LABORATORY,
                "NDD02",
                30,
                fault="slow-drip",
            ),
        ),
        "access-denied": (
            _Doc("pdf", "clinic", "Clinic letter", CONSULTATION, "RR8", 100),
            _Doc("pdf", "results", "Blood results", LABORATORY, "NDD02", 110),
        ),
    }


# --------------------------------------------------------------------------- the builder


def _fhir_datetime(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _patient_details(patient: SandboxPatient) -> files.PatientDetails:
    practice = PRACTICES_BY_ODS[patient.practice_ods]
    streets = (
        "Acacia Avenue",
        "Station Road",
        "Church Lane",
        "Victoria Street",
        "Park View",
        "Mill Close",
    )
    number = int(patient.nhs_number[-3:]) % 97 + 1
    street = streets[int(patient.nhs_number[-2:]) % len(streets)]
    town = practice.address[-1]
    return files.PatientDetails(
        name=" ".join((patient.prefix, *patient.given, patient.family)),
        nhs_number=patient.nhs_number,
        birth_date=patient.birth_date,
        address=(f"{number} {street}", town, practice.postcode[:-3] + " 9ZZ"),
    )


def _practice_sender(ods: str) -> files.Sender:
    practice = PRACTICES_BY_ODS[ods]
    return files.Sender(practice.name, (*practice.address, practice.postcode), practice.phone)


def _org_sender(ods: str, department: str = "") -> files.Sender:
    if ods in PRACTICES_BY_ODS:
        return _practice_sender(ods)
    site = _SITES_BY_ODS[ods]
    return files.Sender(site.name, site.address, site.phone, department)


class _Builder:
    """Writes document files under `root` and returns their DocumentRecords."""

    def __init__(self, root: Path, today: date) -> None:
        self.root = root
        self.today = today
        self.now = datetime.combine(today, time(8, 0), tzinfo=UTC)

    # -- dates and identities

    def dates(self, seed: str, days_ago: int, *, no_created: bool) -> tuple[str | None, str, date]:
        """Return (created, indexed, letter date): indexed is days or weeks after created."""
        rng = random.Random(f"dates:{seed}")
        created = (
            self.now
            - timedelta(days=days_ago)
            + timedelta(hours=rng.randint(1, 9), minutes=rng.randrange(60))
        )
        lag = timedelta(
            days=rng.choice((0, 1, 2, 3, 5, 8, 13, 21, 34)),
            hours=rng.randint(1, 6),
            minutes=rng.randrange(60),
        )
        indexed = min(created + lag, self.now - timedelta(minutes=rng.randint(5, 600)))
        indexed = max(indexed, created)
        return (
            None if no_created else _fhir_datetime(created),
            _fhir_datetime(indexed),
            created.date(),
        )

    @staticmethod
    def identifier(practice_ods: str, doc_id: str) -> str:
        return str(uuid.uuid5(_UUID_NAMESPACE, f"{practice_ods}/DocumentReference/{doc_id}"))

    @staticmethod
    def author(spec_author: str | None) -> tuple[str | None, str | None]:
        """(author organisation ODS, author practitioner id) for a spec's author."""
        if spec_author is None:
            return None, None
        if spec_author in _STAFF_BY_ID:
            return _STAFF_BY_ID[spec_author].practitioner.organisation_ods, spec_author
        if spec_author not in _ORGANISATION_NAMES:
            raise ValueError(f"unknown author {spec_author!r}")
        return spec_author, None

    # -- content

    def letter(
        self, spec: _Doc, patient: SandboxPatient, seed: str, written_on: date
    ) -> files.Letter:
        org, practitioner_id = self.author(spec.author)
        practice_ods = patient.practice_ods
        gp = _usual_gp(practice_ods)
        if practitioner_id is not None:
            staff = _STAFF_BY_ID[practitioner_id]
            p = staff.practitioner
            signature, job_title = f"{p.prefix} {p.given} {p.family}", staff.job_title
            sender = _org_sender(p.organisation_ods, staff.department)
        elif org is not None:
            signature, job_title = "Medical Secretary", f"on behalf of {_ORGANISATION_NAMES[org]}"
            sender = _org_sender(org)
        else:  # no recorded author: a letter from outside the NHS
            signature, job_title = "Duty Team Manager", "Adult Social Care"
            sender = files.Sender(
                "Adult Social Care", ("Civic Hall", "Leeds LS1 1UR"), "0113 496 0999"
            )
        internal = org == practice_ods
        if internal and spec.to is not None:
            recipient = (
                "The Consultant",
                _ORGANISATION_NAMES[spec.to],
                *_SITES_BY_ODS[spec.to].address,
            )
            salutation = "Dear Colleague"
        elif internal:
            recipient = ("To whom it may concern",)
            salutation = "Dear Sir or Madam"
        else:
            practice = PRACTICES_BY_ODS[practice_ods]
            recipient = (
                f"{gp.prefix} {gp.given[0]} {gp.family}",
                practice.name,
                *practice.address,
                practice.postcode,
            )
            salutation = f"Dear {gp.prefix} {gp.family}"
        title = spec.title or (spec.type[1] if isinstance(spec.type, tuple) else spec.type)
        return files.compose_letter(
            spec.letter,
            seed=seed,
            sender=sender,
            recipient=recipient,
            salutation=salutation,
            patient=_patient_details(patient),
            written_on=written_on,
            title=title,
            author=signature,
            author_role=job_title,
            pages=spec.pages,
        )

    def content(self, kind: str, letter: files.Letter, seed: str, lab_ods: str | None) -> bytes:
        if kind == "pdf":
            return files.pdf_bytes(letter)
        if kind == "bigpdf":
            return files.large_scan_pdf(letter, target_size=BIG_PDF_TARGET, seed=seed)
        if kind == "tiff":
            return files.scanned_tiff(letter)
        if kind == "jpeg":
            return files.skin_photo(seed=seed)
        if kind == "png":
            return files.skin_photo(seed=seed, size=(640, 480), format="PNG")
        if kind == "bmp":
            return files.skin_photo(seed=seed, size=(480, 360), format="BMP")
        if kind == "ecg":
            return files.ecg_png(seed=seed, heart_rate=random.Random(seed).randint(58, 96))
        if kind == "docx":
            return files.docx_bytes(letter)
        if kind == "rtf":
            return files.rtf_bytes(letter)
        if kind == "html":
            return files.html_bytes(letter)
        if kind == "txt":
            return files.text_bytes(letter)
        if kind == "xml":
            return files.pathology_xml(letter, lab_code=lab_ods or "NDD02")
        if kind == "wav":
            return files.wav_tone(seconds=2.0, frequency=440.0)
        if kind == "au":
            return files.au_tone(seconds=1.5, frequency=660.0)
        if kind == "dat":
            return files.random_bytes(24 * 1024 + 17, seed=seed)
        raise ValueError(f"unknown file kind {kind!r}")

    def write(self, relative: str, data: bytes) -> tuple[int, str]:
        return files.write_file(self.root / relative, data)

    # -- records

    def document(self, patient: SandboxPatient, number: int, spec: _Doc) -> DocumentRecord:
        doc_id = f"doc-{patient.nhs_number}-{number:03d}"
        created, indexed, written_on = self.dates(doc_id, spec.days_ago, no_created=spec.no_created)
        letter = self.letter(spec, patient, doc_id, written_on)
        author_org, _ = self.author(spec.author)
        content_type, ext = _FILE_KINDS[spec.file]
        relative = f"{DOCUMENTS_DIR}/{patient.scenario}/{doc_id}.{ext}"
        size, sha256 = self.write(relative, self.content(spec.file, letter, doc_id, author_org))
        return self.record(
            patient, doc_id, spec, created, indexed, content_type, size, relative, sha256
        )

    def record(
        self,
        patient: SandboxPatient,
        doc_id: str,
        spec: _Doc,
        created: str | None,
        indexed: str,
        content_type: str,
        size: int,
        relative: str | None,
        sha256: str | None,
        unavailable_reason: str | None = None,
    ) -> DocumentRecord:
        author_org, author_practitioner = self.author(spec.author)
        coded = isinstance(spec.type, tuple)
        return DocumentRecord(
            id=doc_id,
            patient_nhs=patient.nhs_number,
            practice_ods=patient.practice_ods,
            identifier=self.identifier(patient.practice_ods, doc_id),
            title=spec.title,
            type_code=spec.type[0] if isinstance(spec.type, tuple) else None,
            type_display=spec.type[1] if isinstance(spec.type, tuple) else None,
            type_text=None if coded else str(spec.type),
            created=created,
            indexed=indexed,
            author_org_ods=author_org,
            author_practitioner_id=author_practitioner,
            content_type=content_type,
            size=size,
            file=relative,
            sha256=sha256,
            unavailable_reason=unavailable_reason,
            nopat=spec.nopat,
            listed_twice=spec.listed_twice,
            encounter_id=spec.encounter,
            fault=spec.fault,
        )

    def placeholder(
        self, patient: SandboxPatient, number: int, spec: _Placeholder
    ) -> DocumentRecord:
        doc_id = f"doc-{patient.nhs_number}-{number:03d}"
        created, indexed, _ = self.dates(doc_id, spec.days_ago, no_created=False)
        as_doc = _Doc("pdf", "letter", spec.title, spec.type, spec.author, spec.days_ago)
        reason = spec.reason or _too_large(spec.size)
        return self.record(
            patient,
            doc_id,
            as_doc,
            created,
            indexed,
            spec.content_type,
            spec.size,
            None,
            None,
            reason,
        )

    def scenario(
        self, scenario: str, specs: tuple[_Doc, ...], first: int = 1
    ) -> list[DocumentRecord]:
        patient = PATIENTS_BY_SCENARIO[scenario]
        return [self.document(patient, n, spec) for n, spec in enumerate(specs, start=first)]

    # -- the many-documents scenario

    def many(self, count: int) -> list[DocumentRecord]:
        """`count` documents with varied metadata that share a handful of small files."""
        patient = PATIENTS_BY_SCENARIO["many-documents"]
        practice = patient.practice_ods
        # fmt: off
        shared_specs = {
            # name: spec used to write the shared file
            "letter-1": _Doc("pdf", "referral", "Referral letter", REFERRAL, f"prac-{practice.lower()}-02", 10),
            "letter-2": _Doc("pdf", "clinic", "Outpatient clinic letter", CONSULTATION, "prac-rr8-01", 10, pages=2),
            "letter-3": _Doc("pdf", "discharge", "Discharge summary", DISCHARGE, "prac-rcd-01", 10, pages=3),
            "results": _Doc("pdf", "results", "Blood test results", LABORATORY, "NDD02", 10),
            "photo": _Doc("jpeg", "note", "Clinical photograph", "Photograph", "prac-rxf-01", 10),
            "scan": _Doc("tiff", "letter", "Scanned correspondence", "Scanned document", practice, 10),
            "word": _Doc("docx", "letter", "Letter", "Letter", f"prac-{practice.lower()}-01", 10),
            "rtf": _Doc("rtf", "letter", "Care plan", "Care plan", f"prac-{practice.lower()}-03", 10),
        }
        # fmt: on
        shared: dict[str, tuple[str, str, int, str]] = {}
        for n, (name, spec) in enumerate(shared_specs.items(), start=1):
            content_type, ext = _FILE_KINDS[spec.file]
            letter = self.letter(spec, patient, f"shared-{name}", self.today - timedelta(days=365))
            relative = f"{DOCUMENTS_DIR}/{patient.scenario}/shared-{n}-{name}.{ext}"
            size, sha256 = self.write(
                relative, self.content(spec.file, letter, f"shared-{name}", "NDD02")
            )
            shared[name] = (relative, content_type, size, sha256)
        specialties = (
            "Cardiology",
            "Dermatology",
            "Orthopaedics",
            "Respiratory",
            "Diabetes",
            "Ophthalmology",
            "Urology",
            "Rheumatology",
            "Gastroenterology",
            "ENT",
        )
        internal = [
            s.practitioner.id for s in _STAFF if s.practitioner.organisation_ods == practice
        ]
        consultants = [
            s.practitioner.id for s in _STAFF if s.practitioner.role_code == _CONSULTANT[0]
        ]
        # fmt: off
        kinds: tuple[tuple[str, _Type, str, str], ...] = (
            # (title, type, shared file, author pool)
            ("Outpatient clinic letter - {s}", CONSULTATION, "letter-2", "hospital"),
            ("Discharge summary", DISCHARGE, "letter-3", "hospital"),
            ("Inpatient final discharge letter", IP_DISCHARGE, "letter-3", "hospital"),
            ("Referral to {s}", REFERRAL, "letter-1", "internal"),
            ("Blood test results", LABORATORY, "results", "lab"),
            ("Imaging report - {s}", IMAGING, "letter-1", "hospital"),
            ("Clinical photograph", "Photograph", "photo", "any"),
            ("Scanned document", "Scanned document", "scan", "practice"),
            ("Letter", "Letter", "word", "any"),
            ("Care plan", "Care plan", "rtf", "internal"),
            ("{s} procedure report", PROCEDURE, "letter-2", "hospital"),
            ("Correspondence", "Correspondence", "scan", "none"),
        )
        # fmt: on
        rng = random.Random("many-documents")
        documents = []
        for number in range(1, count + 1):
            doc_id = f"doc-{patient.nhs_number}-{number:04d}"
            title_template, doc_type, file_name, pool = rng.choice(kinds)
            author: str | None
            if pool == "hospital":
                author = rng.choice(consultants + ["RR8", "RCD", "RXF"])
            elif pool == "internal":
                author = rng.choice(internal)
            elif pool == "lab":
                author = rng.choice(("NDD02", "prac-ndd02-01"))
            elif pool == "practice":
                author = practice
            elif pool == "none":
                author = None
            else:
                author = rng.choice(internal + consultants)
            title: str | None = title_template.format(s=rng.choice(specialties))
            if rng.random() < 0.01:
                title = None
            nopat = rng.choices((None, "meta", "label"), weights=(96, 2, 2))[0]
            spec = _Doc(
                "pdf",
                "letter",
                title,
                doc_type,
                author,
                rng.randint(1, 3650),
                no_created=rng.random() < 0.03,
                nopat=nopat,
            )
            created, indexed, _ = self.dates(doc_id, spec.days_ago, no_created=spec.no_created)
            relative, content_type, size, sha256 = shared[file_name]
            documents.append(
                self.record(
                    patient, doc_id, spec, created, indexed, content_type, size, relative, sha256
                )
            )
        return documents

    # -- the structured scenario

    def structured(
        self,
    ) -> tuple[list[DocumentRecord], list[ConsultationRecord], list[ProblemRecord]]:
        patient = PATIENTS_BY_SCENARIO["structured"]
        nhs = patient.nhs_number
        practice = patient.practice_ods.lower()
        gp, partner, nurse = f"prac-{practice}-01", f"prac-{practice}-02", f"prac-{practice}-03"

        def enc(n: int) -> str:
            return f"enc-{nhs}-{n:02d}"

        def doc(n: int) -> str:
            return f"doc-{nhs}-{n:03d}"

        # (consultation number, title, days ago, practitioner, topics as (title, document numbers))
        # fmt: off
        consultations = (
            (1, "Surgery consultation", 700, gp, (("Type 2 diabetes review", (1, 2)), ("Blood pressure", (3,)))),
            (2, "Telephone consultation", 460, partner, (("Knee pain", (4,)),)),
            (3, "Surgery consultation", 240, gp, (("Hypertension", (5,)), ("Medication review", ()), ("Referral", ()))),
            (4, "Home visit", 45, nurse, (("Home visit", (6,)),)),  # flat: a single topic
        )
        # fmt: on
        when = {n: days for n, _, days, _, _ in consultations}
        # fmt: off
        specs = (
            _Doc("pdf", "results", "HbA1c and renal function", LABORATORY, "NDD02", when[1] + 6, encounter=enc(1)),
            _Doc("pdf", "letter", "Diabetic eye screening result", "Letter", "RCD", when[1] + 20, encounter=enc(1)),
            _Doc("ecg", "note", "ECG at diabetes review", "ECG", nurse, when[1], encounter=enc(1)),
            _Doc("pdf", "referral", "Physiotherapy referral - knee pain", REFERRAL, partner, when[2], encounter=enc(2), to="NDD01"),
            _Doc("pdf", "clinic", "Hypertension clinic letter", CONSULTATION, "prac-rr8-01", when[3] + 10, pages=2, encounter=enc(3)),
            _Doc("jpeg", "note", "Photograph of pressure area (home visit)", "Photograph", nurse, when[4], encounter=enc(4)),
            _Doc("pdf", "imaging", "X-ray both knees", IMAGING, "RCD", 520),
            _Doc("docx", "letter", "Letter to housing department", "Letter", gp, 150),
        )
        # fmt: on
        documents = self.scenario("structured", specs)
        consultation_records = [
            ConsultationRecord(
                id=enc(n),
                patient_nhs=nhs,
                date=_fhir_datetime(
                    self.now - timedelta(days=days) + timedelta(hours=1, minutes=10 * n)
                ),
                title=title,
                practitioner_id=practitioner,
                topics=tuple((topic, tuple(doc(d) for d in docs)) for topic, docs in topics),
            )
            for n, title, days, practitioner, topics in consultations
        ]
        problems = [
            ProblemRecord(
                id=f"cond-{nhs}-01",
                patient_nhs=nhs,
                name="Type 2 diabetes mellitus",
                snomed_code="44054006",
                onset=(self.today - timedelta(days=9 * 365)).isoformat(),
                active=True,
                related_document_ids=(doc(1),),  # also in consultation 1
            ),
            ProblemRecord(
                id=f"cond-{nhs}-02",
                patient_nhs=nhs,
                name="Essential hypertension",
                snomed_code="59621000",
                onset=(self.today - timedelta(days=6 * 365)).isoformat(),
                active=True,
                related_document_ids=(),
            ),
            ProblemRecord(
                id=f"cond-{nhs}-03",
                patient_nhs=nhs,
                name="Osteoarthritis of knee",
                snomed_code="239873007",
                onset=(self.today - timedelta(days=520)).isoformat(),
                active=True,
                related_document_ids=(),
                actual_problem_document_id=doc(7),  # the X-ray report is the problem
            ),
        ]
        # doc(8), the housing letter, is linked from nothing.
        return documents, consultation_records, problems

    # -- the stress scenario

    def stress(self) -> list[DocumentRecord]:
        patient = PATIENTS_BY_SCENARIO["stress"]
        documents = []
        for number, size in enumerate(STRESS_SIZES, start=1):
            doc_id = f"doc-{patient.nhs_number}-{number:03d}"
            mib = size // files.MIB
            spec = _Doc(
                "pdf",
                "letter",
                f"Stress test {mib} MB (beyond the 5 MB limit)",
                "Stress test",
                patient.practice_ods,
                1 + number,
            )
            created, indexed, _ = self.dates(doc_id, spec.days_ago, no_created=False)
            relative = f"{DOCUMENTS_DIR}/{patient.scenario}/{doc_id}.pdf"
            written, sha256 = files.write_stress_pdf(self.root / relative, size, seed=doc_id)
            record = self.record(
                patient,
                doc_id,
                spec,
                created,
                indexed,
                "application/pdf",
                written,
                relative,
                sha256,
            )
            documents.append(replace(record, over_limit=True))
        return documents


def _build(root: Path, today: date, include_stress: bool) -> SandboxRecord:
    builder = _Builder(root, today)
    nhs = PATIENTS_BY_SCENARIO["documents"].nhs_number

    documents = builder.scenario("documents", _documents_scenario(lambda n: f"enc-{nhs}-{n:02d}"))

    placeholder_patient = PATIENTS_BY_SCENARIO["placeholders"]
    placeholders, small = _placeholders_scenario()
    documents += [
        builder.placeholder(placeholder_patient, n, spec)
        for n, spec in enumerate(placeholders, start=1)
    ]
    documents += builder.scenario("placeholders", small, first=len(placeholders) + 1)

    documents += builder.many(MANY_DOCUMENTS)
    structured_documents, consultations, problems = builder.structured()
    documents += structured_documents
    for scenario, specs in _short_scenarios().items():
        documents += builder.scenario(scenario, specs)
    if include_stress:
        documents += builder.stress()
    return SandboxRecord(
        organisations=ORGANISATIONS,
        practitioners=PRACTITIONERS,
        documents=tuple(documents),
        consultations=tuple(consultations),
        problems=tuple(problems),
    )


# --------------------------------------------------------------------------- JSON


def record_to_json(record: SandboxRecord) -> dict[str, Any]:
    """The record as JSON-ready lists of objects (tuples become lists)."""
    return {
        "organisations": [asdict(o) for o in record.organisations],
        "practitioners": [asdict(p) for p in record.practitioners],
        "documents": [asdict(d) for d in record.documents],
        "consultations": [asdict(c) for c in record.consultations],
        "problems": [asdict(p) for p in record.problems],
    }


def record_from_json(data: Mapping[str, Any]) -> SandboxRecord:
    """The inverse of `record_to_json` (also accepts a whole manifest)."""
    return SandboxRecord(
        organisations=tuple(Organisation(**o) for o in data["organisations"]),
        practitioners=tuple(Practitioner(**p) for p in data["practitioners"]),
        documents=tuple(DocumentRecord(**d) for d in data["documents"]),
        consultations=tuple(
            ConsultationRecord(
                **{
                    **c,
                    "topics": tuple((title, tuple(ids)) for title, ids in c["topics"]),
                }
            )
            for c in data["consultations"]
        ),
        problems=tuple(
            ProblemRecord(**{**p, "related_document_ids": tuple(p["related_document_ids"])})
            for p in data["problems"]
        ),
    )


# --------------------------------------------------------------------------- generate and load


def file_path(data_dir: Path, document: DocumentRecord) -> Path | None:
    """Where a document's file is, or None for a placeholder."""
    return None if document.file is None else data_dir / document.file


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _generate_unlocked(data_dir: Path, today: date, include_stress: bool) -> SandboxRecord:
    for leftover in data_dir.glob(".generating-*"):  # from a run that crashed
        shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".generating-", dir=data_dir))
    try:
        record = _build(staging, today, include_stress)
        manifest = {
            "version": GENERATOR_VERSION,
            "generated_on": today.isoformat(),
            "include_stress": include_stress,
            **record_to_json(record),
        }
        (staging / MANIFEST_NAME).write_text(
            json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        # Swap in: first remove the old manifest (so no manifest ever points at the wrong
        # files), then the documents, then the new manifest, atomically.
        (data_dir / MANIFEST_NAME).unlink(missing_ok=True)
        old = data_dir / DOCUMENTS_DIR
        if old.exists():
            old.rename(staging / "old-documents")
        (staging / DOCUMENTS_DIR).rename(old)
        os.replace(staging / MANIFEST_NAME, data_dir / MANIFEST_NAME)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record


def generate(data_dir: Path, *, today: date, include_stress: bool = True) -> SandboxRecord:
    """Generate every file and the manifest into `data_dir`, replacing what was there."""
    with _locked(data_dir):
        return _generate_unlocked(data_dir, today, include_stress)


def _load(data_dir: Path, include_stress: bool, today: date) -> SandboxRecord | None:
    """The record from an existing manifest, or None if it cannot be reused."""
    try:
        manifest = json.loads((data_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
        if manifest.get("version") != GENERATOR_VERSION:
            return None
        # Dates are relative to the day of generation (a death "10 days ago" and its letters):
        # a manifest from another day would drift away from what PDS says today.
        if manifest.get("generated_on") != today.isoformat():
            return None
        if include_stress and not manifest.get("include_stress"):
            return None
        record = record_from_json(manifest)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for document in record.documents:
        path = file_path(data_dir, document)
        if path is None:
            continue
        try:
            if path.stat().st_size != document.size:
                return None
        except OSError:
            return None
    if not include_stress:
        record = replace(record, documents=tuple(d for d in record.documents if not d.over_limit))
    return record


def load_or_generate(data_dir: Path, *, today: date, include_stress: bool = True) -> SandboxRecord:
    """Reuse the manifest in `data_dir` if it is current and its files are all there (same
    generator version, every file present with the right size); otherwise generate.

    A manifest generated on another day is made again, so every date stays relative to today.
    """
    with _locked(data_dir):
        record = _load(data_dir, include_stress, today)
        if record is not None:
            return record
        return _generate_unlocked(data_dir, today, include_stress)
