"""Who is in the sandbox: its practices and its patients, one patient per scenario.

Everything here is fixed, so the sandbox is the same on every machine and every run;
only dates are relative to today (a "recent" death stays recent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta


@dataclass(frozen=True)
class Practice:
    ods: str
    name: str
    asid: str
    party_key: str
    address: tuple[str, ...]
    postcode: str
    phone: str
    documents_enabled: bool = True
    federated: bool = True

    def service_root(self, base_url: str, capability: str) -> str:
        """Return the service root of `capability` ("documents", "structured" or "appointments")."""
        suffix = {"documents": "/documents", "structured": "/structured", "appointments": ""}
        return f"{base_url}/{self.ods}/STU3/1/gpconnect{suffix[capability]}"

    @property
    def organisation_id(self) -> str:
        return f"org-{self.ods.lower()}"


PRACTICES: tuple[Practice, ...] = (
    Practice(
        ods="A20047",
        name="Riverside Medical Practice",
        asid="918999198001",
        party_key="A20047-900001",
        address=("1 River Street", "Leeds"),
        postcode="LS1 4AP",
        phone="0113 496 0001",
    ),
    Practice(
        ods="B82617",
        name="Hillcrest Surgery",
        asid="918999198002",
        party_key="B82617-900002",
        address=("22 Hill Road", "Harrogate"),
        postcode="HG1 2BT",
        phone="01423 496 002",
    ),
    Practice(
        ods="C81016",
        name="Meadowbank Health Centre",
        asid="918999198003",
        party_key="C81016-900003",
        address=("Meadow Lane", "Wakefield"),
        postcode="WF1 3QS",
        phone="01924 496 003",
    ),
    # Not part of the federation: it has switched Access Document off (ACCESS DENIED).
    Practice(
        ods="D99001",
        name="Oakfield Surgery",
        asid="918999198004",
        party_key="D99001-900004",
        address=("5 Oak Avenue", "York"),
        postcode="YO1 7HH",
        phone="01904 496 004",
        documents_enabled=False,
        federated=False,
    ),
)

PRACTICES_BY_ODS = {practice.ods: practice for practice in PRACTICES}


@dataclass(frozen=True)
class Faults:
    """What a patient or practice does wrong on purpose (see the `faulty` scenario)."""

    latency_seconds: float = 0.0
    error_rate: float = 0.0  # share of requests answered 503
    binary_stops_half_way: bool = False
    invalid_base64: bool = False
    non_json_body: bool = False
    slow_drip_bytes_per_second: int = 0
    # A write (POST or PUT) is carried out, then its reply held back this long: a consumer
    # that gives up sooner never hears that the booking (or change) was made.
    write_reply_delay_seconds: float = 0.0
    # A write waits this long before it is carried out: a consumer that gives up sooner and
    # looks straight away finds nothing, yet the write is made a little later all the same.
    write_commit_delay_seconds: float = 0.0

    @property
    def any(self) -> bool:
        return self != Faults()


@dataclass(frozen=True)
class SandboxPatient:
    scenario: str
    description: str
    nhs_number: str
    practice_ods: str
    family: str
    given: tuple[str, ...]
    prefix: str
    gender: str
    birth_date: date
    restricted: bool = False  # PDS S-flag: GP Connect must not be called at all
    deceased_days_ago: int | None = None
    consent: bool = True
    registered_at_practice: bool = True  # False: on PDS, but the practice has no record
    active: bool = True  # False: the practice's record is inactive (e.g. left the practice)
    faults: Faults = field(default_factory=Faults)

    @property
    def logical_id(self) -> str:
        """The id the practice's system gives the patient (opaque, as GP Connect requires)."""
        return f"pat-{self.nhs_number}"

    def deceased_on(self, today: date) -> date | None:
        if self.deceased_days_ago is None:
            return None
        return today - timedelta(days=self.deceased_days_ago)


# How long after death a practice still shares documents (SPEC §1.3: MAY, 28 days).
DECEASED_ACCESS_DAYS = 28

PATIENTS: tuple[SandboxPatient, ...] = (
    SandboxPatient(
        scenario="documents",
        description="About 40 documents of every kind GP systems hold, with the quirks real providers send.",
        nhs_number="9990000018",
        practice_ods="A20047",
        family="Whitaker",
        given=("Margaret", "Ann"),
        prefix="Mrs",
        gender="female",
        birth_date=date(1948, 3, 14),
    ),
    SandboxPatient(
        scenario="placeholders",
        description="Documents over 5 MB listed without a URL, each with the reason.",
        nhs_number="9990000026",
        practice_ods="A20047",
        family="Okafor",
        given=("Daniel",),
        prefix="Mr",
        gender="male",
        birth_date=date(1971, 11, 2),
    ),
    SandboxPatient(
        scenario="many-documents",
        description="1,500 documents, for performance.",
        nhs_number="9990000034",
        practice_ods="B82617",
        family="Fitzgerald",
        given=("Eileen",),
        prefix="Ms",
        gender="female",
        birth_date=date(1939, 7, 30),
    ),
    SandboxPatient(
        scenario="no-documents",
        description="Registered, with no documents at all.",
        nhs_number="9990000042",
        practice_ods="B82617",
        family="Patel",
        given=("Arjun",),
        prefix="Mr",
        gender="male",
        birth_date=date(1994, 5, 19),
    ),
    SandboxPatient(
        scenario="sensitive",
        description="Restricted (S-flag) on PDS; the practice returns an empty search.",
        nhs_number="9990000050",
        practice_ods="A20047",
        family="Doe",
        given=("Jordan",),
        prefix="Mx",
        gender="unknown",
        birth_date=date(1985, 1, 1),
        restricted=True,
    ),
    SandboxPatient(
        scenario="deceased-recent",
        description="Died 10 days ago: still within the 28-day access period, documents returned.",
        nhs_number="9990000069",
        practice_ods="C81016",
        family="Hargreaves",
        given=("Walter",),
        prefix="Mr",
        gender="male",
        birth_date=date(1932, 9, 8),
        deceased_days_ago=10,
    ),
    SandboxPatient(
        scenario="deceased-expired",
        description="Died 90 days ago: past the access period, so not found.",
        nhs_number="9990000077",
        practice_ods="C81016",
        family="Lindqvist",
        given=("Ingrid",),
        prefix="Mrs",
        gender="female",
        birth_date=date(1929, 2, 17),
        deceased_days_ago=90,
    ),
    SandboxPatient(
        scenario="no-consent",
        description="Has dissented from sharing: found, but the document search is refused.",
        nhs_number="9990000085",
        practice_ods="A20047",
        family="Brennan",
        given=("Siobhan",),
        prefix="Miss",
        gender="female",
        birth_date=date(1990, 12, 24),
        consent=False,
    ),
    SandboxPatient(
        scenario="not-registered",
        description="On PDS (practice Riverside), but no practice's system holds a record yet: booking registers them temporarily.",
        nhs_number="9990000093",
        practice_ods="A20047",
        family="Nowak",
        given=("Tomasz",),
        prefix="Mr",
        gender="male",
        birth_date=date(1982, 6, 3),
        registered_at_practice=False,
    ),
    SandboxPatient(
        scenario="structured",
        description="Consultations and problems in the structured record that link documents.",
        nhs_number="9990000107",
        practice_ods="B82617",
        family="Achebe",
        given=("Grace",),
        prefix="Dr",
        gender="female",
        birth_date=date(1966, 4, 11),
    ),
    SandboxPatient(
        scenario="slow",
        description="The practice's system takes several seconds to answer.",
        nhs_number="9990000115",
        practice_ods="C81016",
        family="Moreau",
        given=("Luc",),
        prefix="Mr",
        gender="male",
        birth_date=date(1958, 8, 21),
        faults=Faults(latency_seconds=4.0),
    ),
    SandboxPatient(
        scenario="faulty",
        description="Intermittent 503s and broken documents: one stops half way, one has invalid base64, one is not JSON, one drips slowly.",
        nhs_number="9990000123",
        practice_ods="C81016",
        family="Quinn",
        given=("Harriet",),
        prefix="Ms",
        gender="female",
        birth_date=date(1977, 10, 9),
        faults=Faults(error_rate=0.3),
    ),
    SandboxPatient(
        scenario="access-denied",
        description="Registered at Oakfield Surgery, which has switched Access Document off.",
        nhs_number="9990000131",
        practice_ods="D99001",
        family="Evans",
        given=("Rhys",),
        prefix="Mr",
        gender="male",
        birth_date=date(1969, 3, 3),
    ),
    SandboxPatient(
        scenario="inactive",
        description="The practice's record is inactive: found by no search, as for the test pack's patient21.",
        nhs_number="9990000166",
        practice_ods="B82617",
        family="Marsh",
        given=("Evelyn",),
        prefix="Mrs",
        gender="female",
        birth_date=date(1951, 2, 27),
        active=False,
    ),
    SandboxPatient(
        scenario="stress",
        description="Documents of 20 MB and 100 MB, beyond the 5 MB limit, for benchmarks only.",
        nhs_number="9990000158",
        practice_ods="A20047",
        family="Benchmark",
        given=("Stress",),
        prefix="Mx",
        gender="unknown",
        birth_date=date(2000, 1, 1),
    ),
)

PATIENTS_BY_NHS_NUMBER = {patient.nhs_number: patient for patient in PATIENTS}
PATIENTS_BY_SCENARIO = {patient.scenario: patient for patient in PATIENTS}
