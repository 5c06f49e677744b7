"""A fake provider for client tests: an httpx MockTransport that records what it was sent."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from gpconnect import ClientConfig, Consumer, GPConnectClient, ProviderEndpoint, RequestingUser
from gpconnect.config import RetryPolicy

DOCUMENTS_ROOT = "https://provider.example.nhs.uk/A20047/STU3/1/gpconnect/documents"
STRUCTURED_ROOT = "https://provider.example.nhs.uk/A20047/STU3/1/gpconnect/structured"
PROVIDER_ASID = "918999198738"
CONSUMER_ASID = "200000000359"

CONSUMER = Consumer(
    asid=CONSUMER_ASID,
    ods_code="RR8",
    organisation_name="Leeds Teaching Hospitals",
    issuer="https://viewer.example.nhs.uk/",
)
USER = RequestingUser(
    local_user_id="4f0c8e1a-2a31-4b8e-9a55-6f7d3c1e2b90",
    family_name="Jones",
    given_names=("Claire",),
    prefixes=("Dr",),
    sds_user_id="111222333444",
    sds_role_profile_id="444555666777",
)


def decode_jwt_claims(authorization: str) -> dict[str, Any]:
    token = authorization.removeprefix("Bearer ")
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def json_response(status: int, body: Any, **headers: str) -> httpx.Response:
    return httpx.Response(
        status,
        content=json.dumps(body).encode() if not isinstance(body, bytes) else body,
        headers={"Content-Type": "application/fhir+json;charset=utf-8", **headers},
    )


@dataclass
class FakeProvider:
    """Answers each request with the next queued reply (a Response, an exception or a callable)."""

    replies: list[Any] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)

    def queue(self, *replies: Any) -> FakeProvider:
        self.replies.extend(replies)
        return self

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.replies:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        if callable(reply):
            return reply(request)
        return reply

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def make_client(
    provider: Callable[[httpx.Request], httpx.Response],
    *,
    root: str = DOCUMENTS_ROOT,
    proxy: str | None = None,
    attempts: int = 3,
    clock: Callable[[], float] | None = None,
    sleeps: list[float] | None = None,
    endpoint: ProviderEndpoint | None = None,
) -> GPConnectClient:
    config = ClientConfig(
        consumer=CONSUMER,
        spine_proxy_url=proxy,
        retry=RetryPolicy(attempts=attempts, initial_backoff=0.5, max_backoff=4, jitter=0.1),
    )
    recorded = sleeps if sleeps is not None else []
    return GPConnectClient(
        config,
        user=USER,
        endpoint=endpoint or ProviderEndpoint(service_root=root, asid=PROVIDER_ASID),
        http=httpx.Client(transport=httpx.MockTransport(provider)),
        sleep=recorded.append,
        **({"clock": clock} if clock else {}),
    )


class BrokenStream(httpx.SyncByteStream):
    """A body that sends some bytes and then loses the connection."""

    def __init__(self, first: bytes) -> None:
        self.first = first

    def __iter__(self) -> Iterator[bytes]:
        yield self.first
        raise httpx.ReadError("connection reset by peer")
