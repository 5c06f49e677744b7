"""`python -m gpconnect`: check connectivity to a GP Connect provider from a terminal.

Examples (against the sandbox):

    python -m gpconnect --root http://127.0.0.1:8001/A20047/STU3/1/gpconnect/documents \\
        --asid 918999198738 find-patient 9690937286
    python -m gpconnect --sds http://127.0.0.1:8001/spine-directory/FHIR/R4 --ods A20047 \\
        list-documents 9690937286
    python -m gpconnect --root … --asid … save-document URL letter.pdf
    python -m gpconnect --sds http://127.0.0.1:8001/spine-directory/FHIR/R4 --ods B82617 \\
        --consumer-ods A20047 --consumer-org-type gp-practice slots 2027-03-22 2027-03-28

Every option can also come from the environment variable named in its help.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from .client import GPConnectClient, build_http_client
from .config import (
    ClientConfig,
    ConfigurationError,
    Consumer,
    ProviderEndpoint,
    RequestingUser,
    Timeouts,
    TLSConfig,
)
from .errors import GPConnectError
from .interactions import Capability, Interaction, Interactions
from .models import DocumentSummary, Slot
from .nhs_number import format as format_nhs_number
from .spine import SpineDirectory


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name) or default


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gpconnect",
        description="Talk to a GP Connect provider (Access Document) to check connectivity.",
    )
    where = parser.add_argument_group("provider (give --root and --asid, or --sds and --ods)")
    where.add_argument(
        "--root", default=_env("GPCONNECT_ROOT"), help="provider service root (GPCONNECT_ROOT)"
    )
    where.add_argument(
        "--asid",
        default=_env("GPCONNECT_PROVIDER_ASID"),
        help="provider ASID (GPCONNECT_PROVIDER_ASID)",
    )
    where.add_argument(
        "--sds", default=_env("GPCONNECT_SDS_URL"), help="SDS FHIR base URL (GPCONNECT_SDS_URL)"
    )
    where.add_argument(
        "--sds-api-key",
        default=_env("GPCONNECT_SDS_API_KEY"),
        help="SDS API key (GPCONNECT_SDS_API_KEY)",
    )
    where.add_argument(
        "--ods",
        default=_env("GPCONNECT_PRACTICE_ODS"),
        help="practice ODS code (GPCONNECT_PRACTICE_ODS)",
    )
    where.add_argument(
        "--proxy",
        default=_env("GPCONNECT_SPINE_PROXY_URL"),
        help="Spine Secure Proxy base URL (GPCONNECT_SPINE_PROXY_URL)",
    )

    us = parser.add_argument_group("consumer and user")
    us.add_argument(
        "--consumer-asid",
        default=_env("GPCONNECT_CONSUMER_ASID", "200000000359"),
        help="our ASID (GPCONNECT_CONSUMER_ASID)",
    )
    us.add_argument(
        "--consumer-ods",
        default=_env("GPCONNECT_CONSUMER_ODS_CODE", "GPCVIEW"),
        help="our ODS code (GPCONNECT_CONSUMER_ODS_CODE)",
    )
    us.add_argument(
        "--consumer-name",
        default=_env("GPCONNECT_CONSUMER_ORG_NAME", "GP Connect document viewer"),
        help="our organisation name (GPCONNECT_CONSUMER_ORG_NAME)",
    )
    us.add_argument(
        "--consumer-org-type",
        default=_env("GPCONNECT_CONSUMER_ORG_TYPE"),
        choices=("gp-practice", "urgent-care"),
        help="our organisation type, for free-slot searches (GPCONNECT_CONSUMER_ORG_TYPE)",
    )
    us.add_argument(
        "--issuer",
        default=_env("GPCONNECT_JWT_ISSUER", "https://gpconnect-viewer.example/"),
        help="JWT iss (GPCONNECT_JWT_ISSUER)",
    )
    us.add_argument(
        "--user-id",
        default=_env("GPCONNECT_CLI_USER_ID", "cli-connectivity-check"),
        help="local user id, the JWT sub (GPCONNECT_CLI_USER_ID)",
    )
    us.add_argument(
        "--user-family",
        default=_env("GPCONNECT_CLI_USER_FAMILY", "Check"),
        help="user's family name",
    )
    us.add_argument(
        "--user-given",
        default=_env("GPCONNECT_CLI_USER_GIVEN", "Connectivity"),
        help="user's given name",
    )
    us.add_argument(
        "--sds-user-id", default=_env("GPCONNECT_CLI_SDS_USER_ID", "UNK"), help="SDS user id"
    )
    us.add_argument(
        "--sds-role-profile-id",
        default=_env("GPCONNECT_CLI_SDS_ROLE_PROFILE_ID", "UNK"),
        help="SDS role profile id",
    )

    tls = parser.add_argument_group("TLS")
    tls.add_argument(
        "--cert",
        default=_env("GPCONNECT_TLS_CLIENT_CERT"),
        help="client certificate, PEM (GPCONNECT_TLS_CLIENT_CERT)",
    )
    tls.add_argument(
        "--key",
        default=_env("GPCONNECT_TLS_CLIENT_KEY"),
        help="client key, PEM (GPCONNECT_TLS_CLIENT_KEY)",
    )
    tls.add_argument(
        "--ca",
        default=_env("GPCONNECT_TLS_CA_BUNDLE"),
        help="CA bundle, PEM (GPCONNECT_TLS_CA_BUNDLE)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="read timeout in seconds")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")

    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("capabilities", help="read the provider's CapabilityStatement")
    find = commands.add_parser("find-patient", help="find a patient by NHS number")
    find.add_argument("nhs_number")
    listing = commands.add_parser("list-documents", help="find a patient and list their documents")
    listing.add_argument("nhs_number")
    listing.add_argument(
        "--from",
        dest="created_from",
        type=date.fromisoformat,
        help="created on or after YYYY-MM-DD",
    )
    listing.add_argument(
        "--to", dest="created_to", type=date.fromisoformat, help="created on or before YYYY-MM-DD"
    )
    listing.add_argument("--author", help="authoring organisation ODS code")
    listing.add_argument("--description", help="keywords in the title or type")
    save = commands.add_parser(
        "save-document", help="retrieve a document (its Binary URL) to a file"
    )
    save.add_argument("url", help="the document's attachment URL, as list-documents prints it")
    save.add_argument("output", type=Path, help="file to write ('-' for standard output)")
    slots = commands.add_parser(
        "slots", help="list the practice's free slots between two dates (at most 14 days)"
    )
    slots.add_argument("start", type=date.fromisoformat, help="first day, YYYY-MM-DD")
    slots.add_argument("end", type=date.fromisoformat, help="last day, YYYY-MM-DD")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = ClientConfig(
            consumer=Consumer(
                asid=args.consumer_asid,
                ods_code=args.consumer_ods,
                organisation_name=args.consumer_name,
                issuer=args.issuer,
                organisation_type=args.consumer_org_type,
            ),
            spine_proxy_url=args.proxy,
            tls=TLSConfig(client_cert=args.cert, client_key=args.key, ca_bundle=args.ca),
            timeouts=Timeouts(read=args.timeout),
        )
        user = RequestingUser(
            local_user_id=args.user_id,
            family_name=args.user_family,
            given_names=(args.user_given,) if args.user_given else (),
            sds_user_id=args.sds_user_id,
            sds_role_profile_id=args.sds_role_profile_id,
        )
    except ConfigurationError as error:
        parser.error(str(error))
    with build_http_client(config) as http:
        try:
            return _run(args, parser, config, user, http)
        except GPConnectError as error:
            print(f"error: {error.message}", file=sys.stderr)
            print(f"  {error}", file=sys.stderr)
            return 1
        except (ConfigurationError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2


def _run(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    config: ClientConfig,
    user: RequestingUser,
    http: httpx.Client,
) -> int:
    interaction = {
        "capabilities": Interactions.DOCUMENTS_METADATA,
        "find-patient": Interactions.DOCUMENTS_PATIENT_SEARCH,
        "list-documents": Interactions.DOCUMENTS_SEARCH,
        "save-document": Interactions.DOCUMENTS_BINARY,
        "slots": Interactions.SLOT_SEARCH,
    }[args.command]
    endpoint = _endpoint(args, parser, http, interaction)
    client = GPConnectClient(config, user=user, endpoint=endpoint, http=http)

    if args.command == "capabilities":
        capabilities = client.capabilities(Capability.DOCUMENTS)
        _print(
            args,
            capabilities,
            f"{capabilities.name} {capabilities.version} (FHIR {capabilities.fhir_version})",
        )
    elif args.command == "find-patient":
        found = client.find_patient(args.nhs_number)
        if found.patient is None:
            _print(
                args,
                found,
                f"No patient with NHS number {format_nhs_number(args.nhs_number)} at this practice.",
            )
        else:
            p = found.patient
            _print(
                args,
                found,
                f"{p.name.display} · born {p.birth_date} · {p.gender} · NHS No. {format_nhs_number(p.nhs_number)} · id {p.id}",
            )
        _trace(found.trace_id)
    elif args.command == "list-documents":
        found = client.find_patient(args.nhs_number)
        _trace(found.trace_id)
        if found.patient is None:
            print("No patient with that NHS number at this practice.", file=sys.stderr)
            return 1
        search = client.search_documents(
            found.patient.id,
            created_from=args.created_from,
            created_to=args.created_to,
            author_ods=args.author,
            description=args.description,
        )
        _print(
            args, search, "\n".join(_document_line(d) for d in search.documents) or "No documents."
        )
        _trace(search.trace_id)
    elif args.command == "slots":
        free = client.search_free_slots(args.start, args.end)
        _print(args, free, "\n".join(_slot_line(s) for s in free.slots) or "No free slots.")
        _trace(free.trace_id)
    else:
        with client.open_binary(args.url) as download:
            _trace(download.trace_id)
            output = sys.stdout.buffer if str(args.output) == "-" else args.output.open("wb")
            try:
                for chunk in download:
                    output.write(chunk)
            finally:
                if output is not sys.stdout.buffer:
                    output.close()
            print(
                f"{download.bytes_decoded} bytes ({download.content_type or 'type not given'})",
                file=sys.stderr,
            )
    return 0


def _endpoint(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    http: httpx.Client,
    interaction: Interaction,
) -> ProviderEndpoint:
    if args.root and args.asid:
        return ProviderEndpoint(service_root=args.root.rstrip("/"), asid=args.asid)
    if args.sds and args.ods:
        directory = SpineDirectory(args.sds, http=http, api_key=args.sds_api_key)
        return directory.provider_endpoint(args.ods, interaction)
    parser.error("give --root and --asid, or --sds and --ods")


def _document_line(document: DocumentSummary) -> str:
    when = document.created or document.indexed or "no date"
    size = f"{document.size} bytes" if document.size is not None else "size unknown"
    where = document.url or f"NOT AVAILABLE: {document.unavailable_reason}"
    return f"{when}  {document.title}  [{document.content_type}, {size}]  {where}"


def _slot_line(slot: Slot) -> str:
    """One slot with what the specification says to show: when, how, what, who and where."""
    schedule = slot.schedule
    who = slot.practitioner.name.plain if slot.practitioner else "practitioner not given"
    details = [schedule.practitioner_role.display if schedule.practitioner_role else None]
    details.append(slot.practitioner.gender if slot.practitioner else None)
    where = slot.location.name if slot.location else "location not given"
    if slot.location and slot.location.address:
        where = f"{where}, {slot.location.address.display}"
    minutes = int(slot.duration.total_seconds() // 60)
    return (
        f"{slot.start:%a %d %b %H:%M}-{slot.end:%H:%M} ({minutes} min)  "
        f"{slot.delivery_channel or 'channel not given'}  "
        f"{slot.slot_type or 'slot type not given'} / {schedule.schedule_type or 'schedule not given'}  "
        f"{who} ({', '.join(d for d in details if d) or 'role not given'})  {where}  [{slot.id}]"
    )


def _print(args: argparse.Namespace, result: Any, text: str) -> None:
    if args.json:
        data = asdict(result) if is_dataclass(result) and not isinstance(result, type) else result
        print(json.dumps(data, default=str, indent=2))
    else:
        print(text)


def _trace(trace_id: str | None) -> None:
    print(f"(Ssp-TraceID {trace_id})", file=sys.stderr)
