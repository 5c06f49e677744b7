"""Benchmark: a page of the 1,500-document table, and the app's time beyond the provider's.

Starts the provider sandbox in this process (uvicorn in a thread, on a loopback port, with its
data in a temporary directory and no stress documents) and the viewer (demo mode with DEBUG
off, SQLite and the in-process cache, all in a temporary VAR_DIR). A clinician signs in with
django.test.Client and opens the `many-documents` patient (1,500 documents) by POSTing the NHS
number to `/`. Then, interleaved over --repeat runs so that drift affects every figure alike:

  HTTP only     the same search with httpx, its answer read but not parsed
  provider      `GPConnectClient.search_documents` at the same endpoint, through the app's
                pooled httpx client: HTTP plus the library's parsing, the floor for any page
                that asks the practice
  cold page     the patient page as a full page with the list cache emptied (cache.clear()):
                the provider's time plus the app's
  app overhead  cold page minus provider, run by run
  warm partials the table as an htmx partial (HX-Request: true) from the cached list, sorted
                by title, on page 30 and filtered by a keyword; the baseline is the same
                partial for the `documents` patient (43 documents)
  memory        tracemalloc peak of one warm partial (baseline: the 43-document patient's)
                and of one cold page (baseline: the library search alone)

Times are server times: Client.get runs the whole Django stack (middleware, session, audit
row, template) with no network between browser and app. The sandbox's own objects are frozen
out of the garbage collector (gc.freeze) before Django starts, so that the app's collections
cost what they would in a process of its own; its allocations while it answers a search still
count in the search's and the cold page's memory.

Targets (medians): a warm partial at most 50 ms; the app's overhead on a cold page at most
half the provider's time. Exits 1 if one is missed. Timings belong here, never in tests.

    .venv/bin/python bench/documents_table.py               # 30 runs, under 30 s
    .venv/bin/python bench/documents_table.py --repeat 5    # a quick check
    .venv/bin/python bench/documents_table.py --profile     # and cProfile the warm partial
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MiB = 1024 * 1024
WARM_TARGET_MS = 50.0
OVERHEAD_TARGET = 0.5  # of the provider's time
KEYWORD = "cardiology"
# The warm partials: what a clinician does once the list is cached.
WARM = {
    "sorted by title": {"sort": "title", "dir": "asc"},
    "page 30": {"page": "30"},
    f"keyword {KEYWORD!r}": {"keyword": KEYWORD},
}
SHOWING = re.compile(r"Showing (\d[\d,]*)–(\d[\d,]*) of (\d[\d,]*) documents")


# -- the sandbox and the app, in this process ----------------------------------------------


@contextmanager
def running_sandbox(data_dir: Path) -> Iterator[str]:
    """Serve the sandbox on 127.0.0.1 until the block ends; yield its base URL."""
    import uvicorn

    from gpconnect.sandbox.app import create_app
    from gpconnect.sandbox.data import load_or_generate
    from gpconnect.sandbox.provider import Sandbox

    # Bound before Django starts, so that the settings can name the port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    record = load_or_generate(data_dir, today=date.today(), include_stress=False)
    sandbox = Sandbox(base_url=base_url, data_dir=data_dir, record=record)
    config = uvicorn.Config(create_app(sandbox), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the sandbox did not start")
            time.sleep(0.02)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def start_django(var_dir: Path, sandbox_url: str) -> None:
    """Configure the viewer as `make demo` does, but like production in one way: DEBUG off."""
    for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "SECRET_KEY_FILE"):
        os.environ.pop(name, None)  # SQLite and the in-process cache, under var_dir
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DEMO_MODE": "1",
            "DEBUG": "0",
            "VAR_DIR": str(var_dir),
            "LOG_LEVEL": "WARNING",
            "GPCONNECT_SDS_URL": f"{sandbox_url}/spine-directory/FHIR/R4",
            "GPCONNECT_PDS_URL": f"{sandbox_url}/personal-demographics/FHIR/R4",
        }
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


class Viewer:
    """A signed-in clinician's browser, and the app's own view of the patients it opened."""

    def __init__(self) -> None:
        from django.conf import settings
        from django.contrib.auth.models import User
        from django.test import Client

        from viewer.models import UserProfile
        from viewer.roles import CLINICIAN, grant_role

        self.user = User.objects.create_user(username="bench", password=None)
        grant_role(self.user, CLINICIAN)
        UserProfile.objects.create(
            user=self.user,
            title="Dr",
            given_names="Bench",
            family_name="Clinician",
            sds_user_id="900000000001",
            sds_role_profile_id="900000000101",
            organisation_ods_code=settings.GPCONNECT_CONSUMER_ODS_CODE,
            organisation_name=settings.GPCONNECT_CONSUMER_ORG_NAME,
        )
        # An allowed host: without setup_test_environment(), "testserver" is not one.
        self.client = Client(SERVER_NAME="127.0.0.1")
        self.client.force_login(self.user)

    def open_patient(self, scenario: str) -> str:
        """POST the scenario's NHS number to `/`; return the patient page's opaque URL."""
        from gpconnect.sandbox.catalogue import PATIENTS_BY_SCENARIO

        nhs_number = PATIENTS_BY_SCENARIO[scenario].nhs_number
        response = self.client.post("/", {"nhs_number": nhs_number})
        if response.status_code != 302 or nhs_number in response["Location"]:
            raise RuntimeError(f"opening {scenario} gave {response.status_code}")
        return str(response["Location"])

    def get(self, url: str, query: dict[str, str] | None = None, *, htmx: bool = False) -> str:
        headers = {"HX-Request": "true"} if htmx else {}
        response = self.client.get(url, query or {}, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url} {query} gave {response.status_code}")
        html = response.content.decode()
        if htmx == ("<html" in html):
            raise RuntimeError(f"GET {url} {query} htmx={htmx} gave the wrong template")
        return html

    def searches(self, url: str) -> tuple[Callable[[], int], Callable[[], int]]:
        """Return the library's search for the patient at `url`, as the app makes it, and the
        same request over plain httpx (its answer read, not parsed)."""
        from gpconnect import (
            DOCUMENT_SEARCH_INCLUDES,
            GPConnectAuth,
            GPConnectClient,
            Interactions,
            ProviderEndpoint,
        )
        from viewer import roles, services

        context = services.patient_context_get(
            user=self.user,
            context_id=url.rstrip("/").rsplit("/", 1)[-1],
            session=self.client.session,
        )
        config, user = services.gpconnect_client_config(), roles.requesting_user(self.user)
        endpoint = ProviderEndpoint(
            service_root=context.service_root,
            asid=context.asid,
            ods_code=context.practice_ods,
            capability=Interactions.DOCUMENTS_SEARCH.capability,
        )
        http = services.http_client()
        client = GPConnectClient(config, user=user, endpoint=endpoint, http=http)

        def search() -> int:
            return len(client.search_documents(context.logical_id).documents)

        def http_only() -> int:
            response = http.get(
                f"{context.service_root}/Patient/{context.logical_id}/DocumentReference",
                params=list(DOCUMENT_SEARCH_INCLUDES),
                auth=GPConnectAuth(config.consumer, user, endpoint, Interactions.DOCUMENTS_SEARCH),
            )
            response.raise_for_status()
            return len(response.content)

        return search, http_only


def showing(html: str) -> tuple[int, int, int]:
    """Return the table's "Showing 26–50 of 1,500 documents" as numbers."""
    match = SHOWING.search(html)
    if match is None:
        raise RuntimeError("the table says nothing about how many documents it shows")
    first, last, total = (int(n.replace(",", "")) for n in match.groups())
    return first, last, total


# -- the measurements ----------------------------------------------------------------------


def timed(function: Callable[[], object]) -> float:
    """Return the milliseconds one call takes."""
    start = time.perf_counter()
    function()
    return (time.perf_counter() - start) * 1000


def peak_mib(function: Callable[[], object]) -> float:
    """Return one call's tracemalloc peak, in MiB above what was allocated before it."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        function()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return (peak - before) / MiB


@dataclass
class Row:
    figure: str
    median: float
    p95: float | None
    unit: str
    baseline_label: str = ""
    baseline: float | None = None

    @classmethod
    def of(
        cls, figure: str, values: list[float], label: str = "", baseline: float | None = None
    ) -> Row:
        """A timing: the median and p95 of `values`, in milliseconds."""
        p95 = (
            statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else None
        )
        return cls(figure, statistics.median(values), p95, "ms", label, baseline)


def measure(viewer: Viewer, repeat: int, profile: bool) -> list[Row]:
    from django.core.cache import cache

    many, few = viewer.open_patient("many-documents"), viewer.open_patient("documents")
    search, http_only = viewer.searches(many)
    few_search, _ = viewer.searches(few)
    count, few_count = search(), few_search()  # warm up: imports, the pooled connection
    body_mib = http_only() / MiB
    if showing(viewer.get(many)) != (1, 25, count):
        raise RuntimeError(f"the first page does not show 1–25 of {count} documents")
    for query in WARM.values():  # what each warm partial shows is what it says
        first, last, total = showing(viewer.get(many, query, htmx=True))
        if query.get("page") and (first, total) != (726, count):
            raise RuntimeError(f"page 30 shows {first}–{last} of {total}")
        if query.get("keyword") and not 0 < total < count:
            raise RuntimeError(f"the keyword {KEYWORD!r} matches {total} of {count}")

    http_ms: list[float] = []
    provider: list[float] = []
    cold: list[float] = []
    overhead: list[float] = []
    warm: dict[str, list[float]] = {name: [] for name in WARM}
    warm_few: dict[str, list[float]] = {name: [] for name in WARM}
    for _ in range(repeat):
        http_ms.append(timed(http_only))
        provider.append(timed(search))
        cache.clear()
        cold.append(timed(lambda: viewer.get(many)))
        overhead.append(cold[-1] - provider[-1])
        viewer.get(few)  # its list cached again after cache.clear()
        for name, query in WARM.items():
            warm[name].append(timed(partial(viewer.get, many, query, htmx=True)))
            warm_few[name].append(timed(partial(viewer.get, few, query, htmx=True)))

    def cold_page() -> None:
        cache.clear()
        viewer.get(many)

    viewer.get(few)
    title = WARM["sorted by title"]
    warm_memory = peak_mib(lambda: viewer.get(many, title, htmx=True))
    few_memory = peak_mib(lambda: viewer.get(few, title, htmx=True))
    search_memory = peak_mib(search)
    cold_memory = peak_mib(cold_page)
    if profile:
        print_profile(lambda: viewer.get(many, title, htmx=True))

    provider_ms = statistics.median(provider)
    rows = [
        Row.of(f"HTTP only: {count:,} documents, {body_mib:.1f} MiB", http_ms),
        Row.of(
            "provider: search_documents (HTTP + parse)",
            provider,
            "HTTP only",
            statistics.median(http_ms),
        ),
        Row.of("cold full page: provider + app", cold, "provider", provider_ms),
        Row.of("app overhead on the cold page", overhead, "provider", provider_ms),
    ]
    for name in WARM:
        rows.append(
            Row.of(
                f"warm htmx partial: {name}",
                warm[name],
                f"{few_count} docs",
                statistics.median(warm_few[name]),
            )
        )
    rows += [
        Row(
            "memory: warm partial (by title)",
            warm_memory,
            None,
            "MiB",
            f"{few_count} docs",
            few_memory,
        ),
        Row("memory: cold full page", cold_memory, None, "MiB", "provider", search_memory),
    ]
    return rows


def print_profile(function: Callable[[], object]) -> None:
    profiler = cProfile.Profile()
    for _ in range(5):
        profiler.runcall(function)
    print("\ncProfile of 5 warm partials (sorted by title), by internal time:")
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(15)


def print_table(rows: list[Row], repeat: int) -> list[str]:
    """Print the figures; return the targets missed."""
    print(
        f"\nThe many-documents patient's table: median and p95 of {repeat} interleaved runs, "
        "server time (django.test.Client); memory: tracemalloc peak of one run"
    )
    header = f"{'figure':<44}{'median':>9}{'p95':>9}{'unit':>5}  {'baseline':<24}{'ratio':>7}"
    print(header)
    print("-" * len(header))
    for row in rows:
        p95 = f"{row.p95:9.1f}" if row.p95 is not None else " " * 9
        baseline, ratio = "", ""
        if row.baseline is not None:
            baseline = f"{row.baseline_label} {row.baseline:.1f} {row.unit}"
            ratio = f"{row.median / row.baseline:6.2f}x"
        print(f"{row.figure:<44}{row.median:9.1f}{p95}{row.unit:>5}  {baseline:<24}{ratio:>7}")
    print(
        f"\nTargets (medians): every warm partial at most {WARM_TARGET_MS:g} ms; the app's "
        f"overhead on a cold page at most {OVERHEAD_TARGET}x the provider's time."
    )

    failures = []
    for row in rows:
        if row.figure.startswith("warm") and row.median > WARM_TARGET_MS:
            failures.append(f"{row.figure}: {row.median:.1f} ms (target {WARM_TARGET_MS:g} ms)")
        if row.figure.startswith("app overhead") and row.baseline:
            share = row.median / row.baseline
            if share > OVERHEAD_TARGET:
                failures.append(
                    f"{row.figure}: {share:.2f}x the provider (target {OVERHEAD_TARGET}x)"
                )
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=30, help="runs of each figure (median, p95)")
    parser.add_argument("--profile", action="store_true", help="cProfile the warm partial")
    args = parser.parse_args()

    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="bench-documents-") as temp,
        running_sandbox(Path(temp) / "sandbox") as sandbox_url,
    ):
        # Out of the collector's sight: every object so far, the sandbox's data among them.
        # The app's collections then cost about what they would in a process of its own.
        gc.freeze()
        start_django(Path(temp) / "var", sandbox_url)
        from django.db import connections

        from viewer import services

        try:
            rows = measure(Viewer(), args.repeat, args.profile)
        finally:
            services.http_client().close()
            connections.close_all()
    failures = print_table(rows, args.repeat)
    print(f"({time.perf_counter() - started:.0f} s in all)")
    if failures:
        print("\nTARGET MISSED:\n  " + "\n  ".join(failures))
        return 1
    print("All targets met.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
