"""`python -m gpconnect.sandbox`: run the GP Connect provider sandbox.

    python -m gpconnect.sandbox                         # http://127.0.0.1:8001, data in var/sandbox
    python -m gpconnect.sandbox --port 9001 --data-dir /tmp/sandbox
    python -m gpconnect.sandbox --tls --cert-dir var/sandbox-certs   # HTTPS, client certificate required
    python -m gpconnect.sandbox --make-certs var/sandbox-certs       # only write the certificates
    python -m gpconnect.sandbox --latency A20047=3 --error-rate 9990000018=0.5 \\
        --binary-fault doc-9990000018-001=stops-half-way --write-reply-delay B82617=40
"""

from __future__ import annotations

import argparse
import logging
import ssl
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from pathlib import Path

from .catalogue import PATIENTS_BY_NHS_NUMBER, PRACTICES_BY_ODS, Faults
from .provider import Sandbox
from .tls import certificates_usable, generate_certificates

BINARY_FAULTS = ("stops-half-way", "invalid-base64", "non-json", "slow-drip")


def _pair(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key or not value:
        raise argparse.ArgumentTypeError(f"{text!r}: use KEY=VALUE")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gpconnect.sandbox",
        description="A strict GP Connect provider with synthetic patients, for demos and tests.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=8001, help="port (default 8001)")
    parser.add_argument(
        "--data-dir", type=Path, default=Path("var/sandbox"), help="where generated data lives"
    )
    parser.add_argument("--public-url", help="base URL consumers use, if not http(s)://HOST:PORT")
    parser.add_argument(
        "--no-stress", action="store_true", help="skip the 20 MB and 100 MB stress documents"
    )
    parser.add_argument(
        "--consumer-asid",
        action="append",
        default=[],
        help="a consumer ASID the proxy accepts (repeatable; default: any)",
    )
    tls = parser.add_argument_group("mutual TLS")
    tls.add_argument(
        "--tls", action="store_true", help="serve HTTPS and require a client certificate"
    )
    tls.add_argument(
        "--cert-dir",
        type=Path,
        default=Path("var/sandbox-certs"),
        help="certificates (made if missing)",
    )
    tls.add_argument(
        "--make-certs",
        type=Path,
        metavar="DIR",
        help="write a CA, server and client certificate, then exit",
    )
    faults = parser.add_argument_group(
        "fault injection (KEY is a practice ODS code or an NHS number)"
    )
    faults.add_argument("--latency", action="append", type=_pair, default=[], metavar="KEY=SECONDS")
    faults.add_argument("--error-rate", action="append", type=_pair, default=[], metavar="KEY=RATE")
    faults.add_argument(
        "--write-reply-delay",
        action="append",
        type=_pair,
        default=[],
        metavar="KEY=SECONDS",
        help="make bookings, amendments and cancellations, then hold their replies back",
    )
    faults.add_argument(
        "--write-commit-delay",
        action="append",
        type=_pair,
        default=[],
        metavar="KEY=SECONDS",
        help="wait this long before making bookings, amendments and cancellations",
    )
    faults.add_argument(
        "--binary-fault",
        action="append",
        type=_pair,
        default=[],
        metavar="DOCUMENT=KIND",
        help=f"KIND is one of {', '.join(BINARY_FAULTS)}",
    )
    parser.add_argument("--log-level", default="info")
    return parser


def configured_faults(
    latency: Sequence[tuple[str, str]],
    error_rate: Sequence[tuple[str, str]],
    write_reply_delay: Sequence[tuple[str, str]] = (),
    write_commit_delay: Sequence[tuple[str, str]] = (),
) -> dict[str, Faults]:
    """Return the command line's faults by key, on top of each patient's own."""
    faults: dict[str, Faults] = {}
    for key, value in write_commit_delay:
        _check_key(key)
        base = faults.get(key) or _own_faults(key)
        faults[key] = replace(base, write_commit_delay_seconds=float(value))
    for key, value in write_reply_delay:
        _check_key(key)
        base = faults.get(key) or _own_faults(key)
        faults[key] = replace(base, write_reply_delay_seconds=float(value))
    for key, value in latency:
        _check_key(key)
        base = faults.get(key) or _own_faults(key)
        faults[key] = replace(base, latency_seconds=float(value))
    for key, value in error_rate:
        _check_key(key)
        rate = float(value)
        if not 0 <= rate <= 1:
            raise SystemExit(f"error rate for {key} must be between 0 and 1")
        base = faults.get(key) or _own_faults(key)
        faults[key] = replace(base, error_rate=rate)
    return faults


def _own_faults(key: str) -> Faults:
    patient = PATIENTS_BY_NHS_NUMBER.get(key)
    return patient.faults if patient else Faults()


def _check_key(key: str) -> None:
    if key not in PRACTICES_BY_ODS and key not in PATIENTS_BY_NHS_NUMBER:
        raise SystemExit(
            f"{key!r} is neither a sandbox practice's ODS code nor a patient's NHS number"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if args.make_certs:
        files = generate_certificates(args.make_certs)
        print(
            f"CA {files.ca_cert}\nserver {files.server_cert} {files.server_key}\nclient {files.client_cert} {files.client_key}"
        )
        return 0
    for _, kind in args.binary_fault:
        if kind not in BINARY_FAULTS:
            raise SystemExit(
                f"unknown binary fault {kind!r}: use one of {', '.join(BINARY_FAULTS)}"
            )

    import uvicorn

    from .app import create_app
    from .data import load_or_generate

    scheme = "https" if args.tls else "http"
    base_url = (args.public_url or f"{scheme}://{args.host}:{args.port}").rstrip("/")
    print(f"Preparing sandbox data in {args.data_dir} …", file=sys.stderr)
    record = load_or_generate(args.data_dir, today=date.today(), include_stress=not args.no_stress)
    sandbox = Sandbox(
        base_url=base_url,
        data_dir=args.data_dir,
        record=record,
        consumer_asids=frozenset(args.consumer_asid),
        faults=configured_faults(
            args.latency, args.error_rate, args.write_reply_delay, args.write_commit_delay
        ),
        binary_faults=dict(args.binary_fault),
    )
    ssl_options: dict[str, object] = {}
    if args.tls:
        # Throw-away certificates live 30 days: make new ones when they are missing or expiring.
        if not certificates_usable(args.cert_dir):
            generate_certificates(args.cert_dir)
        ssl_options = {
            "ssl_certfile": str(args.cert_dir / "server.pem"),
            "ssl_keyfile": str(args.cert_dir / "server.key"),
            "ssl_ca_certs": str(args.cert_dir / "ca.pem"),
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
        }
    print(f"GP Connect sandbox on {base_url} (scenarios: {base_url}/scenarios)", file=sys.stderr)
    uvicorn.run(
        create_app(sandbox),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        **ssl_options,  # type: ignore[arg-type]
    )
    return 0
