"""Users in each role, signed-in clients, and the real sandbox on a loopback port.

The sandbox runs once per session in a thread (as in tests/sandbox) behind a recorder
that notes every path it was asked for, so a test can prove a request never reached
a practice. `gp` points the GPCONNECT_SDS_URL/PDS_URL settings at it for one test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.cache import cache
from django.test import Client

from gpconnect.sandbox.catalogue import PATIENTS_BY_SCENARIO
from gpconnect.sandbox.data import load_or_generate
from gpconnect.sandbox.provider import Sandbox
from tests.sandbox.conftest import _ThreadedServer, bound_socket
from viewer.models import UserProfile


@dataclass
class RecordingSandbox:
    base_url: str
    sandbox: Sandbox
    paths: list[str] = field(default_factory=list)

    def practice_paths(self, ods: str) -> list[str]:
        """Return the paths requested of one practice's GP Connect endpoints."""
        return [p for p in self.paths if p.startswith(f"/{ods}/")]


class _Recorder:
    """ASGI middleware that appends each HTTP request's path to a list."""

    def __init__(self, app: Any, paths: list[str]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


@pytest.fixture(scope="session")
def recording_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordingSandbox]:
    data_dir = tmp_path_factory.mktemp("viewer-sandbox-data")
    record = load_or_generate(data_dir, today=date.today(), include_stress=False)
    sock = bound_socket()
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    running = RecordingSandbox(
        base_url, Sandbox(base_url=base_url, data_dir=data_dir, record=record)
    )
    server = _ThreadedServer(running.sandbox, sock)
    server.server.config.app = _Recorder(server.server.config.app, running.paths)
    with server:
        yield running


@pytest.fixture
def gp(recording_sandbox: RecordingSandbox, settings: Any) -> Iterator[RecordingSandbox]:
    """Point the app's Spine settings at the sandbox, with an empty cache and request log."""
    settings.GPCONNECT_SDS_URL = f"{recording_sandbox.base_url}/spine-directory/FHIR/R4"
    settings.GPCONNECT_PDS_URL = f"{recording_sandbox.base_url}/personal-demographics/FHIR/R4"
    cache.clear()
    recording_sandbox.paths.clear()
    yield recording_sandbox
    cache.clear()


def nhs_number_of(scenario: str) -> str:
    return PATIENTS_BY_SCENARIO[scenario].nhs_number


def make_user(username: str, role: str | None) -> User:
    user = User.objects.create_user(username=username, password="not-used-in-tests")
    if role:
        user.groups.add(Group.objects.get(name=role))
    UserProfile.objects.create(
        user=user,
        title="Dr",
        given_names="Alex",
        family_name=username.title(),
        organisation_ods_code="X99999",
        organisation_name="Test organisation",
    )
    return user


@pytest.fixture
def clinician(db: None) -> User:
    return make_user("clinician", "Clinician")


@pytest.fixture
def receptionist(db: None) -> User:
    return make_user("receptionist", "Receptionist")


@pytest.fixture
def auditor(db: None) -> User:
    return make_user("auditor", "Auditor")


@pytest.fixture
def clinician_client(clinician: User) -> Client:
    client = Client()
    client.force_login(clinician)
    return client
