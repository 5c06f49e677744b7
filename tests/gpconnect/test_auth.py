from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpconnect.auth import (
    GPConnectAuth,
    build_jwt,
    trace_id_of,
    validate_claims,
)
from gpconnect.config import ConfigurationError, Consumer, ProviderEndpoint, RequestingUser
from gpconnect.interactions import Interaction, Interactions

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "fhir"
SPEC_PAYLOAD: dict[str, Any] = json.loads((FIXTURES / "jwt_payload_example.json").read_text())
SPEC_HEADER: dict[str, Any] = json.loads((FIXTURES / "jwt_header.json").read_text())

FHIR_JSON = "application/fhir+json;charset=utf-8"
SERVICE_ROOT = "https://providersupplier.thirdparty.nhs.uk/GP0001/STU3/1"
BASE_SCOPES = {"patient/*.read", "patient/*.write", "organization/*.read", "organization/*.write"}

# Module-level rather than fixtures, so hypothesis tests can use them too.
CONSUMER = Consumer(
    asid="200000000359",
    ods_code="A1001",
    organisation_name="Test Hospital",
    issuer="https://consumersupplier.thirdparty.nhs.uk/",
    device_identifier="CONS-APP-4",
    device_model="Consumer product name",
    device_version="5.3.0",
    device_identifier_system="https://consumersupplier.com/Id/device-identifier",
    user_id_system="https://consumersupplier.com/Id/user-guid",
)
USER = RequestingUser(
    local_user_id="10019",
    family_name="Jones",
    given_names=("Claire",),
    prefixes=("Dr",),
    sds_user_id="111222333444",
    sds_role_profile_id="444555666777",
)
ENDPOINT = ProviderEndpoint(service_root=SERVICE_ROOT, asid="918999198993")


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def split(token: str) -> tuple[bytes, dict[str, Any], str]:
    header, payload, signature = token.split(".")
    return b64url_decode(header), json.loads(b64url_decode(payload)), signature


def claims_of(token: str) -> dict[str, Any]:
    return split(token)[1]


def bearer_claims(request: httpx.Request) -> dict[str, Any]:
    scheme, token = request.headers["Authorization"].split(" ")
    assert scheme == "Bearer"
    return claims_of(token)


def make_jwt(
    *,
    consumer: Consumer = CONSUMER,
    user: RequestingUser = USER,
    audience: str = SERVICE_ROOT,
    scope: str = "patient/*.read",
    issued_at: int = 1469436687,
) -> str:
    return build_jwt(
        consumer=consumer, user=user, audience=audience, scope=scope, issued_at=issued_at
    )


class FakeClock:
    """Advances by `step` seconds every time it is read."""

    def __init__(self, start: float = 1_700_000_000.0, step: float = 1.0) -> None:
        self.now = start
        self.step = step
        self.readings: list[float] = []

    def __call__(self) -> float:
        reading = self.now
        self.readings.append(reading)
        self.now += self.step
        return reading


class Recorder:
    """An httpx.MockTransport handler that keeps each request it is sent."""

    def __init__(self, statuses: Iterator[int] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        # A copy of the headers as sent: a retry sends the same Request object again.
        self.headers: list[httpx.Headers] = []
        self.statuses = statuses

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.headers.append(httpx.Headers(request.headers))
        status = next(self.statuses) if self.statuses else 200
        return httpx.Response(status, json={"resourceType": "OperationOutcome"})


def make_auth(
    interaction: Interaction = Interactions.DOCUMENTS_SEARCH, **kwargs: Any
) -> GPConnectAuth:
    return GPConnectAuth(CONSUMER, USER, ENDPOINT, interaction, **kwargs)


# --- The token's shape ------------------------------------------------------------------


def test_the_header_is_exactly_alg_none_typ_jwt_and_nothing_else() -> None:
    header, _, _ = split(make_jwt())
    assert header == b'{"alg":"none","typ":"JWT"}'
    assert json.loads(header) == SPEC_HEADER
    assert make_jwt().startswith("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.")


def test_the_token_ends_with_a_dot_because_the_signature_is_empty() -> None:
    token = make_jwt()
    assert token.endswith(".")
    assert token.count(".") == 2
    assert split(token)[2] == ""


@pytest.mark.parametrize(
    "user",
    [
        USER,
        # Non-ASCII and punctuation make base64 produce "+" and "/" unless it is base64url.
        RequestingUser(
            local_user_id="a-b.c",
            family_name="O’Brien-Ñúñez ~~~ ???",
            given_names=("Siân", ">>>"),
            prefixes=("Prof",),
        ),
        RequestingUser(local_user_id="1", family_name="X"),
        RequestingUser(local_user_id="12", family_name="XY"),
        RequestingUser(local_user_id="123", family_name="XYZ"),
    ],
)
def test_the_token_is_base64url_without_padding(user: RequestingUser) -> None:
    token = make_jwt(user=user)
    for forbidden in ("=", "+", "/"):
        assert forbidden not in token
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    practitioner = claims_of(token)["requesting_practitioner"]
    assert practitioner["name"][0]["family"] == user.family_name


def test_pyjwt_reads_the_token_as_an_unsigned_jwt() -> None:
    token = make_jwt()
    assert pyjwt.get_unverified_header(token) == {"alg": "none", "typ": "JWT"}
    assert pyjwt.decode(token, options={"verify_signature": False}) == claims_of(token)


# --- The claims, against SPEC §4.3 and the specification's example ----------------------


def test_the_claims_reproduce_the_specifications_example_payload() -> None:
    claims = claims_of(make_jwt(issued_at=SPEC_PAYLOAD["iat"]))
    expected = json.loads(json.dumps(SPEC_PAYLOAD))
    # The one deliberate difference: the example's consumer-defined user identifier is a
    # GUID other than `sub`; we send our single local user id in both places.
    expected["requesting_practitioner"]["identifier"][2]["value"] = "10019"
    assert claims == expected


def test_the_claims_have_the_same_keys_as_the_example_at_every_level() -> None:
    claims = claims_of(make_jwt())
    assert claims.keys() == SPEC_PAYLOAD.keys()
    for resource in ("requesting_device", "requesting_organization", "requesting_practitioner"):
        assert claims[resource].keys() == SPEC_PAYLOAD[resource].keys()
    assert claims["requesting_practitioner"]["name"][0].keys() == {"family", "given", "prefix"}


def test_iss_is_the_consumer_issuer() -> None:
    assert claims_of(make_jwt())["iss"] == CONSUMER.issuer


def test_sub_is_the_local_user_id_and_equals_the_practitioner_id() -> None:
    claims = claims_of(make_jwt())
    assert claims["sub"] == USER.local_user_id
    assert claims["sub"] == claims["requesting_practitioner"]["id"]


def test_aud_is_the_audience_given() -> None:
    assert claims_of(make_jwt(audience="https://x.example/B1/STU3/1"))["aud"] == (
        "https://x.example/B1/STU3/1"
    )


def test_iat_is_the_integer_given_and_exp_is_300_seconds_later() -> None:
    claims = claims_of(make_jwt(issued_at=1_700_000_123))
    assert claims["iat"] == 1_700_000_123
    assert claims["exp"] == 1_700_000_423
    assert type(claims["iat"]) is int
    assert type(claims["exp"]) is int


def test_reason_for_request_is_directcare() -> None:
    assert claims_of(make_jwt())["reason_for_request"] == "directcare"


@pytest.mark.parametrize("scope", sorted(BASE_SCOPES))
def test_requested_scope_is_the_base_scope_with_no_confidentiality_suffix(scope: str) -> None:
    claims = claims_of(make_jwt(scope=scope))
    assert claims["requested_scope"] == scope
    assert "conf/" not in claims["requested_scope"]


@pytest.mark.parametrize("scope", ["patient/*.read conf/N", "patient/*.read conf/R", "", "x"])
def test_a_scope_other_than_the_four_base_values_is_refused(scope: str) -> None:
    with pytest.raises(ValueError):
        make_jwt(scope=scope)


def test_there_is_no_requested_record_claim() -> None:
    assert "requested_record" not in claims_of(make_jwt())


def test_requesting_device_is_a_minimal_device_from_the_consumer() -> None:
    assert claims_of(make_jwt())["requesting_device"] == {
        "resourceType": "Device",
        "identifier": [
            {"system": CONSUMER.device_identifier_system, "value": CONSUMER.device_identifier}
        ],
        "model": CONSUMER.device_model,
        "version": CONSUMER.device_version,
    }


def test_requesting_organization_carries_the_consumer_ods_code_and_name() -> None:
    assert claims_of(make_jwt())["requesting_organization"] == {
        "resourceType": "Organization",
        "identifier": [
            {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "A1001"}
        ],
        "name": "Test Hospital",
    }


def test_requesting_practitioner_has_the_three_identifiers_in_order() -> None:
    practitioner = claims_of(make_jwt())["requesting_practitioner"]
    assert practitioner["resourceType"] == "Practitioner"
    assert [i["system"] for i in practitioner["identifier"]] == [
        "https://fhir.nhs.uk/Id/sds-user-id",
        "https://fhir.nhs.uk/Id/sds-role-profile-id",
        CONSUMER.user_id_system,
    ]
    assert [i["value"] for i in practitioner["identifier"]] == [
        "111222333444",
        "444555666777",
        "10019",
    ]
    # The NHS systems are the example's, character for character.
    example_systems = [i["system"] for i in SPEC_PAYLOAD["requesting_practitioner"]["identifier"]]
    assert [i["system"] for i in practitioner["identifier"]][:2] == example_systems[:2]


def test_sds_ids_default_to_unk() -> None:
    user = RequestingUser(local_user_id="u1", family_name="Smith")
    identifiers = claims_of(make_jwt(user=user))["requesting_practitioner"]["identifier"]
    assert [i["value"] for i in identifiers] == ["UNK", "UNK", "u1"]


def test_the_practitioner_family_name_is_a_string_and_given_and_prefix_are_lists() -> None:
    user = RequestingUser(
        local_user_id="u1", family_name="Smith", given_names=("Anne", "Marie"), prefixes=("Dr",)
    )
    name = claims_of(make_jwt(user=user))["requesting_practitioner"]["name"]
    assert name == [{"family": "Smith", "given": ["Anne", "Marie"], "prefix": ["Dr"]}]


def test_empty_given_and_prefix_arrays_are_omitted() -> None:
    user = RequestingUser(local_user_id="u1", family_name="Smith")
    name = claims_of(make_jwt(user=user))["requesting_practitioner"]["name"]
    assert name == [{"family": "Smith"}]


# --- The claim resources are valid STU3 ---------------------------------------------------


@pytest.mark.parametrize(
    "user",
    [USER, RequestingUser(local_user_id="u1", family_name="Smith")],
    ids=["full", "minimal"],
)
def test_the_claim_resources_validate_as_stu3_with_fhir_resources(user: RequestingUser) -> None:
    from fhir.resources.STU3.device import Device
    from fhir.resources.STU3.organization import Organization
    from fhir.resources.STU3.practitioner import Practitioner

    claims = claims_of(make_jwt(user=user))
    device = Device.model_validate(claims["requesting_device"])
    organization = Organization.model_validate(claims["requesting_organization"])
    practitioner = Practitioner.model_validate(claims["requesting_practitioner"])
    assert device.model == CONSUMER.device_model
    assert organization.identifier is not None
    assert organization.identifier[0].value == CONSUMER.ods_code
    assert practitioner.id == user.local_user_id
    assert practitioner.name is not None
    assert practitioner.name[0].family == user.family_name
    # A round trip through the model loses nothing we sent.
    assert (
        json.loads(practitioner.model_dump_json(exclude_none=True))
        == (claims["requesting_practitioner"])
    )


def test_the_example_payload_resources_validate_with_the_same_models() -> None:
    # A check on the check: the validator accepts the specification's own example.
    validate_claims(CONSUMER, USER)


@pytest.mark.parametrize(
    ("consumer_changes", "user_changes", "mentioned"),
    [
        # A Django username is often an email address, but sub is a FHIR id.
        ({}, {"local_user_id": "claire.jones@example.nhs.uk"}, "requesting_practitioner"),
        ({}, {"local_user_id": "a user"}, "requesting_practitioner"),
        ({}, {"local_user_id": "x" * 65}, "64"),
        ({}, {"given_names": ("",)}, "requesting_practitioner"),
        ({}, {"prefixes": ("",)}, "requesting_practitioner"),
        ({}, {"sds_user_id": ""}, "requesting_practitioner"),
        ({"device_model": ""}, {}, "requesting_device"),
        ({"device_identifier": ""}, {}, "requesting_device"),
        ({"issuer": "consumersupplier.thirdparty.nhs.uk"}, {}, "issuer"),
        ({"user_id_system": "user guid"}, {}, "user_id_system"),
        ({"device_identifier_system": "device identifier"}, {}, "device_identifier_system"),
        ({"issuer": "https:// consumer.example/"}, {}, "issuer"),
        ({"issuer": "https://"}, {}, "issuer"),
    ],
)
def test_claims_a_provider_would_reject_raise_configuration_error_when_auth_is_created(
    consumer_changes: dict[str, str],
    user_changes: dict[str, Any],
    mentioned: str,
) -> None:
    consumer = Consumer(**{**vars(CONSUMER), **consumer_changes})
    user = RequestingUser(**{**vars(USER), **user_changes})
    with pytest.raises(ConfigurationError) as raised:
        GPConnectAuth(consumer, user, ENDPOINT, Interactions.DOCUMENTS_SEARCH)
    assert mentioned in str(raised.value)


def test_identifier_systems_may_be_any_absolute_uri() -> None:
    consumer = Consumer(
        **{
            **vars(CONSUMER),
            "device_identifier_system": "urn:oid:2.16.840.1.113883.2.1.3.2.4.18.99",
            "user_id_system": "http://consumer.example/Id/user",
        }
    )
    GPConnectAuth(consumer, USER, ENDPOINT, Interactions.DOCUMENTS_SEARCH)


def test_a_configuration_error_does_not_repeat_the_users_name() -> None:
    user = RequestingUser(
        local_user_id="claire@example.nhs.uk", family_name="Zebedee", given_names=("",)
    )
    with pytest.raises(ConfigurationError) as raised:
        validate_claims(CONSUMER, user)
    assert "Zebedee" not in str(raised.value)
    assert "claire@example.nhs.uk" not in str(raised.value)


def test_validation_runs_once_per_consumer_and_user() -> None:
    user = RequestingUser(local_user_id=f"cache-{uuid.uuid4().hex[:8]}", family_name="Cache")
    before = validate_claims.cache_info()
    for interaction in Interactions.all():
        GPConnectAuth(CONSUMER, user, ENDPOINT, interaction)
    after = validate_claims.cache_info()
    assert after.misses == before.misses + 1
    assert after.hits == before.hits + len(Interactions.all()) - 1


# --- iat and exp from the clock -------------------------------------------------------------


REALISTIC_CLOCKS = [
    1_469_436_687,  # the specification's example
    1_700_000_000.999999,
    1_767_225_599.5,
    2_147_483_647.9,  # the last second of a signed 32-bit time_t
    2_147_483_648.0,
    4_102_444_800.0,  # 2100-01-01
]


@given(
    st.one_of(
        st.integers(min_value=0, max_value=2**33),
        st.floats(min_value=0, max_value=2**33, allow_nan=False, allow_infinity=False),
        st.sampled_from(REALISTIC_CLOCKS),
    )
)
def test_exp_is_always_iat_plus_300_and_iat_is_the_whole_seconds_of_the_clock(
    now: float,
) -> None:
    auth = make_auth(clock=lambda: now)
    request = next(auth.auth_flow(httpx.Request("GET", SERVICE_ROOT + "/metadata")))
    claims = bearer_claims(request)
    assert claims["iat"] == int(now)
    assert claims["exp"] - claims["iat"] == 300
    assert type(claims["iat"]) is int
    assert type(claims["exp"]) is int


def test_iat_is_now_not_in_the_future() -> None:
    auth = make_auth(clock=lambda: 1_700_000_000.99)
    request = next(auth.auth_flow(httpx.Request("GET", SERVICE_ROOT + "/metadata")))
    assert bearer_claims(request)["iat"] == 1_700_000_000


# --- Headers on every request ---------------------------------------------------------------


@pytest.mark.parametrize("interaction", Interactions.all(), ids=lambda i: i.id.rsplit(":", 2)[-1])
def test_every_request_carries_the_jwt_and_all_ssp_headers(interaction: Interaction) -> None:
    recorder = Recorder()
    auth = GPConnectAuth(CONSUMER, USER, ENDPOINT, interaction, trace_ids=lambda: "trace-1")
    with httpx.Client(transport=httpx.MockTransport(recorder), auth=auth) as client:
        response = client.request(
            interaction.method,
            SERVICE_ROOT + "/Anything",
            content=b"{}" if interaction.method in ("POST", "PUT") else None,
        )
    (sent,) = recorder.requests
    assert sent.headers["Authorization"].startswith("Bearer ")
    assert sent.headers["Ssp-TraceID"] == "trace-1"
    assert sent.headers["Ssp-From"] == CONSUMER.asid
    assert sent.headers["Ssp-To"] == ENDPOINT.asid
    assert sent.headers["Ssp-InteractionID"] == interaction.id
    assert sent.headers["Accept"] == FHIR_JSON
    assert sent.headers.get_list("Accept") == [FHIR_JSON]
    claims = bearer_claims(sent)
    assert claims["aud"] == ENDPOINT.service_root
    assert claims["requested_scope"] == interaction.scope
    assert trace_id_of(response) == "trace-1"


def test_the_default_trace_id_is_a_new_uuid() -> None:
    recorder = Recorder()
    with httpx.Client(transport=httpx.MockTransport(recorder), auth=make_auth()) as client:
        client.get(SERVICE_ROOT + "/DocumentReference")
        client.get(SERVICE_ROOT + "/DocumentReference")
    trace_ids = [request.headers["Ssp-TraceID"] for request in recorder.requests]
    assert [str(uuid.UUID(t)) for t in trace_ids] == trace_ids
    assert trace_ids[0] != trace_ids[1]


def test_two_requests_get_different_trace_ids_and_freshly_built_jwts() -> None:
    recorder = Recorder()
    clock = FakeClock(step=2)
    auth = make_auth(clock=clock)
    with httpx.Client(transport=httpx.MockTransport(recorder), auth=auth) as client:
        first = client.get(SERVICE_ROOT + "/Patient")
        second = client.get(SERVICE_ROOT + "/Patient")
    a, b = recorder.requests
    assert trace_id_of(first) != trace_id_of(second)
    assert a.headers["Ssp-TraceID"] != b.headers["Ssp-TraceID"]
    assert a.headers["Authorization"] != b.headers["Authorization"]
    assert bearer_claims(a)["iat"] == 1_700_000_000
    assert bearer_claims(b)["iat"] == 1_700_000_002
    assert len(clock.readings) == 2  # the clock is read once per request, when it is sent


def test_a_retried_request_is_sent_with_a_new_trace_id_and_jwt() -> None:
    # The client retries by sending the same Request again; the auth flow runs each time.
    recorder = Recorder(statuses=iter([503, 200]))
    auth = make_auth(clock=FakeClock(step=1))
    with httpx.Client(transport=httpx.MockTransport(recorder)) as client:
        request = client.build_request("GET", SERVICE_ROOT + "/Binary/1")
        first = client.send(request, auth=auth)
        first_trace_id = trace_id_of(request)
        second = client.send(request, auth=auth)
        second_trace_id = trace_id_of(request)
    assert first.status_code == 503
    assert second.status_code == 200
    assert first_trace_id != second_trace_id
    a, b = recorder.headers
    assert a["Ssp-TraceID"] == first_trace_id
    assert b["Ssp-TraceID"] == second_trace_id
    assert a["Authorization"] != b["Authorization"]
    assert claims_of(b["Authorization"].removeprefix("Bearer "))["iat"] == (
        claims_of(a["Authorization"].removeprefix("Bearer "))["iat"] + 1
    )
    assert len(request.headers.get_list("Authorization")) == 1
    assert len(request.headers.get_list("Ssp-TraceID")) == 1


def test_post_and_put_get_a_fhir_content_type_and_get_does_not() -> None:
    recorder = Recorder()
    with httpx.Client(transport=httpx.MockTransport(recorder)) as client:
        client.post(
            SERVICE_ROOT + "/Patient/$gpc.getstructuredrecord",
            json={"resourceType": "Parameters"},  # httpx would say application/json
            auth=make_auth(Interactions.STRUCTURED_RECORD),
        )
        client.put(
            SERVICE_ROOT + "/Appointment/1",
            content=b"{}",
            auth=make_auth(Interactions.APPOINTMENT_AMEND),
        )
        client.get(SERVICE_ROOT + "/Patient", auth=make_auth(Interactions.PATIENT_SEARCH))
    post, put, get = recorder.requests
    assert post.headers.get_list("Content-Type") == [FHIR_JSON]
    assert put.headers.get_list("Content-Type") == [FHIR_JSON]
    assert "Content-Type" not in get.headers


def test_accept_replaces_any_accept_the_client_sets_by_default() -> None:
    recorder = Recorder()
    with httpx.Client(
        transport=httpx.MockTransport(recorder), headers={"Accept": "application/json"}
    ) as client:
        client.get(SERVICE_ROOT + "/metadata", auth=make_auth(Interactions.DOCUMENTS_METADATA))
    assert recorder.requests[0].headers.get_list("Accept") == [FHIR_JSON]


def test_the_auth_works_with_an_async_client_too() -> None:
    import asyncio

    recorder = Recorder()

    async def main() -> None:
        transport = httpx.MockTransport(recorder)
        async with httpx.AsyncClient(transport=transport, auth=make_auth()) as client:
            await client.get(SERVICE_ROOT + "/DocumentReference")

    asyncio.run(main())
    assert recorder.requests[0].headers["Ssp-InteractionID"] == (Interactions.DOCUMENTS_SEARCH.id)


@pytest.mark.parametrize(
    ("interaction", "scope"),
    [
        (Interactions.DOCUMENTS_BINARY, "patient/*.read"),
        (Interactions.DOCUMENTS_SEARCH, "patient/*.read"),
        (Interactions.DOCUMENTS_METADATA, "organization/*.read"),
        (Interactions.FOUNDATIONS_METADATA, "organization/*.read"),
        (Interactions.STRUCTURED_METADATA, "organization/*.read"),
        (Interactions.SLOT_SEARCH, "organization/*.read"),
        (Interactions.STRUCTURED_RECORD, "patient/*.read"),
        (Interactions.APPOINTMENT_CREATE, "patient/*.write"),
        (Interactions.APPOINTMENT_CANCEL, "patient/*.write"),
        (Interactions.PATIENT_REGISTER, "patient/*.write"),
    ],
)
def test_the_scope_follows_the_interaction(interaction: Interaction, scope: str) -> None:
    request = next(
        make_auth(interaction).auth_flow(httpx.Request(interaction.method, SERVICE_ROOT))
    )
    assert bearer_claims(request)["requested_scope"] == scope


def test_every_interaction_has_a_base_scope() -> None:
    assert {interaction.scope for interaction in Interactions.all()} <= BASE_SCOPES


def test_the_audience_is_the_endpoint_service_root() -> None:
    endpoint = ProviderEndpoint(service_root="https://other.example/B82617/STU3/1", asid="1")
    auth = GPConnectAuth(CONSUMER, USER, endpoint, Interactions.DOCUMENTS_BINARY)
    request = next(auth.auth_flow(httpx.Request("GET", endpoint.service_root + "/Binary/1")))
    assert bearer_claims(request)["aud"] == "https://other.example/B82617/STU3/1"
    assert request.headers["Ssp-To"] == "1"


# --- trace_id_of --------------------------------------------------------------------------


def test_trace_id_of_reads_a_request_and_a_responses_request() -> None:
    request = next(make_auth(trace_ids=lambda: "abc").auth_flow(httpx.Request("GET", SERVICE_ROOT)))
    assert trace_id_of(request) == "abc"
    assert trace_id_of(httpx.Response(200, request=request)) == "abc"


def test_trace_id_of_is_none_when_there_is_no_trace_id() -> None:
    assert trace_id_of(httpx.Request("GET", SERVICE_ROOT)) is None
    assert trace_id_of(httpx.Response(200)) is None
