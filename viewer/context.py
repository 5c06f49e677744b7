"""The patient context: what one user opened in one session, behind an opaque id.

A patient page's URL carries only the context id, never the NHS number. The context
lives in the user's session (so it ends with the session) and names the practice's
endpoint, the patient's logical id there and both sets of demographics, so the patient
page and the document pages need not trace the patient again.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

from django.contrib.sessions.backends.base import SessionBase

from gpconnect import HumanName, Patient

SESSION_KEY = "viewer_patient_contexts"
MAX_CONTEXTS = 20  # the oldest are forgotten first; a session rarely opens more


@dataclass(frozen=True)
class Demographics:
    """The banner's fields, as one source (PDS or the practice) gave them."""

    family: str
    given: tuple[str, ...]
    prefix: tuple[str, ...]
    birth_date: date | None
    gender: str | None
    deceased_at: date | None = None

    @classmethod
    def of(cls, patient: Patient) -> Demographics:
        deceased_at = patient.deceased_at
        if isinstance(deceased_at, datetime):
            deceased_at = deceased_at.date()
        return cls(
            family=patient.name.family,
            given=patient.name.given,
            prefix=patient.name.prefix,
            birth_date=patient.birth_date,
            gender=patient.gender,
            deceased_at=deceased_at,
        )

    @property
    def name(self) -> HumanName:
        return HumanName(family=self.family, given=self.given, prefix=self.prefix)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["given"] = list(self.given)
        data["prefix"] = list(self.prefix)
        data["birth_date"] = self.birth_date.isoformat() if self.birth_date else None
        data["deceased_at"] = self.deceased_at.isoformat() if self.deceased_at else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Demographics:
        return cls(
            family=data["family"],
            given=tuple(data["given"]),
            prefix=tuple(data["prefix"]),
            birth_date=date.fromisoformat(data["birth_date"]) if data["birth_date"] else None,
            gender=data["gender"],
            deceased_at=date.fromisoformat(data["deceased_at"]) if data["deceased_at"] else None,
        )


def demographic_differences(pds: Demographics, practice: Demographics) -> list[str]:
    """Return the fields (in banner order) where the practice's record differs from PDS."""

    def same(a: str | None, b: str | None) -> bool:
        return (a or "").strip().casefold() == (b or "").strip().casefold()

    differences = []
    if not same(pds.family, practice.family):
        differences.append("family name")
    if not same(" ".join(pds.given), " ".join(practice.given)):
        differences.append("given name")
    if pds.birth_date != practice.birth_date:
        differences.append("date of birth")
    if not same(pds.gender, practice.gender):
        differences.append("gender")
    return differences


@dataclass(frozen=True)
class PatientContext:
    """One opened patient: who, at which practice, and how to reach their documents."""

    id: str
    user_id: int
    nhs_number: str
    practice_ods: str
    service_root: str
    asid: str
    logical_id: str
    pds: Demographics
    practice: Demographics
    differences: tuple[str, ...] = ()
    opened_at: datetime = field(default_factory=datetime.now)

    @property
    def deceased_at(self) -> date | None:
        return self.pds.deceased_at or self.practice.deceased_at

    @property
    def deceased(self) -> bool:
        return self.deceased_at is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "nhs_number": self.nhs_number,
            "practice_ods": self.practice_ods,
            "service_root": self.service_root,
            "asid": self.asid,
            "logical_id": self.logical_id,
            "pds": self.pds.to_dict(),
            "practice": self.practice.to_dict(),
            "differences": list(self.differences),
            "opened_at": self.opened_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PatientContext:
        return cls(
            id=data["id"],
            user_id=data["user_id"],
            nhs_number=data["nhs_number"],
            practice_ods=data["practice_ods"],
            service_root=data["service_root"],
            asid=data["asid"],
            logical_id=data["logical_id"],
            pds=Demographics.from_dict(data["pds"]),
            practice=Demographics.from_dict(data["practice"]),
            differences=tuple(data["differences"]),
            opened_at=datetime.fromisoformat(data["opened_at"]),
        )


def new_context_id() -> str:
    """Return an unguessable id for a URL (it reveals nothing about the patient)."""
    return secrets.token_urlsafe(18)


def context_store(session: SessionBase, context: PatientContext) -> None:
    """Keep the context in the session, replacing an older one for the same patient."""
    stored: dict[str, Any] = dict(session.get(SESSION_KEY, {}))
    for key, value in list(stored.items()):
        if value["nhs_number"] == context.nhs_number and value["user_id"] == context.user_id:
            del stored[key]
    stored[context.id] = context.to_dict()
    # Dicts keep insertion order: drop the oldest beyond the limit.
    for key in list(stored)[:-MAX_CONTEXTS]:
        del stored[key]
    session[SESSION_KEY] = stored


def context_get(session: SessionBase, *, user_id: int, context_id: str) -> PatientContext | None:
    """Return the context if this session holds it for this user, else None."""
    data = session.get(SESSION_KEY, {}).get(context_id)
    if data is None or data.get("user_id") != user_id:
        return None
    return PatientContext.from_dict(data)


def context_recent(session: SessionBase, *, user_id: int) -> list[PatientContext]:
    """Return this user's contexts in the session, the most recently opened first."""
    stored = session.get(SESSION_KEY, {}).values()
    contexts = [PatientContext.from_dict(d) for d in stored if d.get("user_id") == user_id]
    return list(reversed(contexts))
