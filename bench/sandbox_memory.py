"""How much memory the sandbox needs to serve big answers: it must stay flat.

Starts `python -m gpconnect.sandbox` (with its 20 MB and 100 MB stress documents) in its
own process and samples that process's RSS while a client:
  1. searches the documents of the `many-documents` patient (1,500 documents), and
  2. streams the 100 MB stress document through `GPConnectClient.open_binary`.
Prints the sandbox's peak RSS growth for each, next to the size of what it served (the
baseline: a server that held the answer whole would grow by at least that much).

    python bench/sandbox_memory.py [--repeat 3]

Exits non-zero if the sandbox grows by more than a quarter of what it served for the
document, or by more than 64 MiB for the search.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpconnect import (  # noqa: E402
    ClientConfig,
    Consumer,
    GPConnectClient,
    Interactions,
    RequestingUser,
    SpineDirectory,
)
from gpconnect.config import Timeouts  # noqa: E402

MIB = 1024 * 1024
CONSUMER = Consumer(
    asid="200000000359", ods_code="RR8", organisation_name="Bench", issuer="https://bench.example/"
)
USER = RequestingUser(local_user_id="bench", family_name="Bench")


class PeakSampler:
    """Samples a process's RSS every few milliseconds from outside it."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __enter__(self) -> PeakSampler:
        self.start = self.process.memory_info().rss
        self.peak = self.start
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.start) / MIB


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(base_url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(
                "the sandbox exited:\n" + process.stderr.read().decode() if process.stderr else ""
            )
        try:
            httpx.get(f"{base_url}/scenarios", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit("the sandbox did not start in time")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as data_dir:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gpconnect.sandbox",
                "--port",
                str(port),
                "--data-dir",
                data_dir,
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ},
        )
        try:
            wait_until_up(base_url, process)
            return run(base_url, process.pid, args.repeat)
        finally:
            process.terminate()
            process.wait(timeout=30)


def run(base_url: str, pid: int, repeat: int) -> int:
    config = ClientConfig(consumer=CONSUMER, timeouts=Timeouts(read=120, binary_read=300))
    rows = []
    with httpx.Client() as http:
        directory = SpineDirectory(f"{base_url}/spine-directory/FHIR/R4", http=http)
        catalogue = http.get(f"{base_url}/scenarios").json()
        by_scenario = {p["scenario"]: p for p in catalogue["patients"]}

        many = by_scenario["many-documents"]
        endpoint = directory.provider_endpoint(many["practice_ods"], Interactions.DOCUMENTS_SEARCH)
        client = GPConnectClient(config, user=USER, endpoint=endpoint, http=http)
        patient = client.find_patient(many["nhs_number"]).patient
        assert patient is not None
        client.search_documents(patient.id)  # warm up: imports, caches
        growths, times, count = [], [], 0
        for _ in range(repeat):
            with PeakSampler(pid) as sampler:
                started = time.perf_counter()
                count = len(client.search_documents(patient.id).documents)
                times.append(time.perf_counter() - started)
            growths.append(sampler.growth_mib)
        body_mib = (
            len(
                http.get(  # the size of the answer, for the baseline column
                    f"{endpoint.service_root}/Patient/{patient.id}/DocumentReference",
                    params=[
                        ("_include", v)
                        for v in (
                            "DocumentReference:subject:Patient",
                            "DocumentReference:custodian:Organization",
                            "DocumentReference:author:Organization",
                            "DocumentReference:author:Practitioner",
                        )
                    ]
                    + [("_revinclude:recurse", "PractitionerRole:practitioner")],
                    auth=client._auth(Interactions.DOCUMENTS_SEARCH),
                ).content
            )
            / MIB
        )
        rows.append(
            (
                f"search: {count} documents",
                sorted(times)[len(times) // 2],
                body_mib,
                max(growths),
                64.0,
            )
        )

        stress = by_scenario["stress"]
        endpoint = directory.provider_endpoint(
            stress["practice_ods"], Interactions.DOCUMENTS_SEARCH
        )
        client = GPConnectClient(config, user=USER, endpoint=endpoint, http=http)
        patient = client.find_patient(stress["nhs_number"]).patient
        assert patient is not None
        biggest = max(client.search_documents(patient.id).documents, key=lambda d: d.size or 0)
        assert biggest.url is not None
        growths, times = [], []
        for _ in range(repeat):
            digest = hashlib.sha256()
            with PeakSampler(pid) as sampler:
                started = time.perf_counter()
                with client.open_binary(biggest.url) as download:
                    for chunk in download:
                        digest.update(chunk)
                times.append(time.perf_counter() - started)
            growths.append(sampler.growth_mib)
        size_mib = (biggest.size or 0) / MIB
        rows.append(
            (
                f"Binary: {size_mib:.0f} MiB document",
                sorted(times)[len(times) // 2],
                size_mib * 4 / 3,
                max(growths),
                size_mib / 4,
            )
        )

    print(f"Sandbox (pid {pid}) peak RSS growth while serving; worst of {repeat} runs")
    print(
        f"{'answer':32} {'median s':>9} {'answer MiB':>11} {'growth MiB':>11} {'growth/answer':>14} {'limit MiB':>10}"
    )
    failed = False
    for name, seconds, answer_mib, growth, limit in rows:
        ratio = growth / answer_mib if answer_mib else 0
        print(
            f"{name:32} {seconds:9.3f} {answer_mib:11.1f} {growth:11.1f} {ratio:14.2f} {limit:10.1f}"
        )
        failed |= growth > limit
    print("TARGET MISSED" if failed else "All targets met.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
