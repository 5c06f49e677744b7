"""Benchmark: documents through the download view, served by gunicorn as in production.

Starts the provider sandbox (`python -m gpconnect.sandbox`, with its stress documents) and the
viewer under gunicorn with config/gunicorn.conf.py, each in a process of its own on a loopback
port, with all their state in a temporary directory: demo mode (SQLite under VAR_DIR, no
Redis) but DEBUG off, and GPCONNECT_MAX_DOCUMENT_MB raised so the stress documents are
fetched. The demo clinician signs in over HTTP, opens each patient by POSTing the NHS number
to `/` and takes the document's link from the patient page, as a browser would. Three documents:

  4.6 MiB  the `documents` patient's wound clinic photographs (4,846,591 bytes): the largest
           the sandbox has under the specification's 5 MB limit (it has none of 5 MB itself)
  100 MiB  the `stress` patient's 100 MB document
  4 KiB    a letter of the `documents` patient (3,971 bytes), ten times in each run: the
           view's time less the raw one is what a download costs whatever its size (the
           signed-in request, the authorisation, one more hop), and so bounds the ratio
           that any view with that fixed cost can reach for the 4.6 MiB document

and for each, interleaved over --repeat runs so that drift affects every figure alike:

  view     the download view (`.../documents/<key>/download`) through gunicorn, read with
           httpx and discarded; the web workers' peak RSS growth during the download
  raw      the same httpx loop reading the Binary JSON straight from the sandbox, with the
           GP Connect headers the app sends: the limit for anything that relays it
  naive    `response.json()` + `base64.b64decode`, in a fresh process: what a developer would
           write; its peak RSS growth is what a web process doing that would need

Throughputs are document MiB per second (the Binary JSON is 4/3 of the document), medians.
Time to first byte runs from sending the request to the first byte of the body, as the client
sees it. Peak RSS growth is the worst run, summed over the web workers (VmHWM, reset before
each run). Then 20 downloads of the 4.6 MiB document at once, next to one download; and the
behaviours: the view's body is chunked (it sends no Content-Length), and when the practice
stops sending half way (the sandbox's `stops-half-way` fault, set on the 20 MB stress
document) the client gets an incomplete chunked body, i.e. a failed download, never a short
file that looks complete; the failure is audited; gunicorn's logs hold no NHS number.

Then the time to first byte of the 4.6 MiB document once a Celery worker has prefetched it
into the encrypted cache, next to the live one: as the client sees it, and as the server's
own time (the app runs with SERVER_TIMING=1, whose Server-Timing header gives the time from
the first middleware to the response, with its first chunk ready to send).

Targets (issue 5): the view at least 0.8x the raw transfer's throughput for both documents
and at most 32 MiB of web RSS growth at 100 MiB; a prefetched document's first byte within
10 ms of server time; the behaviours. Exits 1 if one is missed. With two CPUs or more, gunicorn runs on
half of them and the sandbox, the worker and the client on the other half, for the raw
baseline and the view alike: in production the practice and the browser are other machines.
Every process it starts is stopped, and the temporary directory removed, however it ends.
Everything runs on one machine, so the sandbox, the web worker and the client share its CPUs:
the notes give each one's CPU time per 100 MiB, to tell a slow path from a busy machine.

    .venv/bin/python bench/download_view.py               # 5 runs: under a minute
    .venv/bin/python bench/download_view.py --repeat 2    # a quicker check
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import html
import json
import os
import re
import secrets
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpconnect import (  # noqa: E402
    Consumer,
    GPConnectAuth,
    GPConnectClient,
    Interactions,
    RequestingUser,
    SpineDirectory,
)
from gpconnect.config import ClientConfig, Timeouts  # noqa: E402

MiB = 1024 * 1024
RATIO_TARGET = 0.8
RSS_TARGET_MIB = 32.0
PREFETCHED_TTFB_TARGET_MS = 10.0
CONCURRENT = 20
LETTER_RUNS = 10  # of the 4 KiB letter in each run: it takes milliseconds
# Two workers as in production, with 10 threads each rather than the config's 8, so that
# all 20 concurrent downloads can be served at once (with 8, four would wait for a thread).
WORKERS, THREADS = 2, 10
MAX_DOCUMENT_MB = 200
PASSWORD = "gpconnect-demo"  # `manage.py demo_users`'s default, for the `clinician` user
# (label, sandbox scenario, title): the two measured, and the one the fault is set on.
SMALL = ("4.6 MiB", "documents", "Wound clinic photographs - leg ulcer series (high resolution)")
LETTER = ("4 KiB", "documents", "Cardiology outpatient letter")  # the per-request cost
LARGE = ("100 MiB", "stress", "Stress test 100 MB (beyond the 5 MB limit)")
FAULTY = ("20 MiB", "stress", "Stress test 20 MB (beyond the 5 MB limit)")
FAULT = "stops-half-way"
# The app's own defaults (config/settings.py), so the sandbox sees the same consumer.
CONSUMER = Consumer(
    asid="999999999999",
    ods_code="X99999",
    organisation_name="GP Connect document viewer (test organisation)",
    issuer="http://127.0.0.1:8000",
)
USER = RequestingUser(local_user_id="bench", family_name="Bench")
LINK = re.compile(r'<a href="(/patients/[\w-]+/documents/\w+/)">([^<]*)</a>')


# -- the documents ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    label: str
    title: str
    nhs_number: str
    practice_ods: str
    id: str
    size: int
    sha256: str


def sandbox_documents(data_dir: Path) -> dict[str, Document]:
    """Generate the sandbox's data (its CLI then finds it ready); return our documents."""
    from gpconnect.sandbox.catalogue import PATIENTS_BY_SCENARIO
    from gpconnect.sandbox.data import load_or_generate

    record = load_or_generate(data_dir, today=date.today(), include_stress=True)
    found = {}
    for label, scenario, title in (SMALL, LETTER, LARGE, FAULTY):
        patient = PATIENTS_BY_SCENARIO[scenario]
        match = [
            d for d in record.documents if d.patient_nhs == patient.nhs_number and d.title == title
        ]
        if len(match) != 1 or not match[0].sha256:
            raise RuntimeError(f"the sandbox has no single retrievable {title!r}")
        document = match[0]
        found[label] = Document(
            label,
            title,
            patient.nhs_number,
            patient.practice_ods,
            document.id,
            document.size,
            document.sha256 or "",
        )
    return found


# -- the processes ---------------------------------------------------------------------------


class Processes:
    """The processes this bench starts, each in a session of its own: all stopped on exit.

    Their own sessions keep a Ctrl-C in the terminal from reaching them before the bench
    stops them here: SIGINT (gunicorn's quick shutdown; SIGTERM would wait out its graceful
    timeout), then SIGKILL to the whole group after 10 seconds.
    """

    def __init__(self) -> None:
        self._started: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        command: list[str],
        env: dict[str, str],
        log: Path,
        cpus: frozenset[int] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `command`; with `cpus`, it and its children run on those CPUs only."""

        def pin() -> None:
            if cpus:
                os.sched_setaffinity(0, cpus)

        with log.open("ab") as out:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=pin,
            )
        self._started.append(process)
        return process

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for process in reversed(self._started):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
        for process in reversed(self._started):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # workers left behind, if any
            process.wait()


@dataclass
class Services:
    sandbox: subprocess.Popen[bytes]
    gunicorn: subprocess.Popen[bytes]
    sandbox_url: str
    web_url: str
    var_dir: Path
    web_log: Path
    env: dict[str, str]  # the viewer's environment, for any other process of the app

    def workers(self) -> list[int]:
        return [child.pid for child in psutil.Process(self.gunicorn.pid).children()]


@dataclass(frozen=True)
class Cpus:
    """Which CPUs the web server gets, and which the rest (sandbox, worker, client).

    In production the practice is another machine and the browser a third, so the web
    server never shares its CPUs with them. Here they share one machine: the web server is
    given half the CPUs and everything else the other half, for the raw baseline and the
    view alike, so the ratio measures the view rather than three processes contending.
    """

    web: frozenset[int] | None
    outside: frozenset[int] | None

    @classmethod
    def split(cls) -> Cpus:
        available = sorted(os.sched_getaffinity(0))
        if len(available) < 2:
            return cls(None, None)
        half = len(available) // 2
        return cls(frozenset(available[half:]), frozenset(available[:half]))

    def describe(self) -> str:
        if self.web is None or self.outside is None:
            return "one CPU: nothing pinned"
        return (
            f"web server on CPU {','.join(map(str, sorted(self.web)))}; sandbox, worker and "
            f"client on CPU {','.join(map(str, sorted(self.outside)))} (the same for raw and view)"
        )


CPUS = Cpus.split()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within a minute:\n{log.read_text()[-3000:]}")


def web_env(var_dir: Path, sandbox_url: str, port: int) -> dict[str, str]:
    """The viewer as `make demo` runs it, but with DEBUG off and a real SECRET_KEY.

    It sees nothing else of this shell's environment (no DATABASE_URL or HTTPS_ONLY from a
    developer's profile): SQLite under var_dir. REDIS_URL is kept when it is set, so the
    workers share one cache (as in production) and Celery uses Redis; without it, each
    worker has its own cache and Celery the file broker under var_dir.
    """
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "REDIS_URL")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env.update(
        {
            "DEMO_MODE": "1",
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "VAR_DIR": str(var_dir),
            "LOG_LEVEL": "WARNING",
            "GPCONNECT_SDS_URL": f"{sandbox_url}/spine-directory/FHIR/R4",
            "GPCONNECT_PDS_URL": f"{sandbox_url}/personal-demographics/FHIR/R4",
            "GPCONNECT_MAX_DOCUMENT_MB": str(MAX_DOCUMENT_MB),
            "GPCONNECT_READ_TIMEOUT": "120",
            "DEMO_PASSWORD": PASSWORD,
            "BIND": f"127.0.0.1:{port}",
            "WEB_CONCURRENCY": str(WORKERS),
            "GUNICORN_THREADS": str(THREADS),
            "SERVER_TIMING": "1",  # the app's own time per response, in a header
        }
    )
    return env


def start_services(temp: Path, processes: Processes, faulty: Document) -> Services:
    """Start the sandbox (the fault set on `faulty`) and the viewer under gunicorn."""
    sandbox_port, web_port = free_port(), free_port()
    sandbox_url, web_url = f"http://127.0.0.1:{sandbox_port}", f"http://127.0.0.1:{web_port}"
    sandbox_log, web_log, var_dir = temp / "sandbox.log", temp / "gunicorn.log", temp / "var"
    sandbox = processes.start(
        [sys.executable, "-m", "gpconnect.sandbox", "--port", str(sandbox_port)]
        + ["--data-dir", str(temp / "sandbox"), "--log-level", "warning"]
        + ["--binary-fault", f"{faulty.id}={FAULT}"],
        dict(os.environ),
        sandbox_log,
        CPUS.outside,
    )
    env = web_env(var_dir, sandbox_url, web_port)
    for command in (["migrate", "--noinput"], ["demo_users"]):
        manage = [sys.executable, "manage.py", *command]
        done = subprocess.run(manage, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {command[0]} failed:\n{done.stderr}")
    config = str(ROOT / "config" / "gunicorn.conf.py")
    gunicorn = processes.start(
        [sys.executable, "-m", "gunicorn", "-c", config], env, web_log, CPUS.web
    )
    wait_until_up(f"{sandbox_url}/scenarios?format=json", sandbox, sandbox_log)
    wait_until_up(f"{web_url}/healthz", gunicorn, web_log)
    return Services(sandbox, gunicorn, sandbox_url, web_url, var_dir, web_log, env)


# -- a signed-in browser, and the sandbox straight ------------------------------------------


class Browser:
    """The demo clinician's browser: cookies, CSRF tokens and links, over real HTTP."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=300)

    def _post(self, path: str, data: dict[str, str]) -> httpx.Response:
        page = self.http.get(path)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        if page.status_code != 200 or token is None:
            raise RuntimeError(f"GET {path} gave {page.status_code} and no CSRF token")
        data = {**data, "csrfmiddlewaretoken": token.group(1)}
        return self.http.post(path, data=data, headers={"Referer": self.base_url + path})

    def sign_in(self) -> None:
        answer = self._post("/accounts/login/", {"username": "clinician", "password": PASSWORD})
        if answer.status_code != 302 or "sessionid" not in self.http.cookies:
            raise RuntimeError(f"signing in gave {answer.status_code}")

    def download_urls(self, documents: list[Document]) -> dict[str, str]:
        """Open each patient once; return each document's download URL from their list.

        Opening a patient again replaces the session's older context for them, and with it
        the URLs found before, so one patient's documents share one opening.
        """
        urls: dict[str, str] = {}
        for nhs_number in dict.fromkeys(d.nhs_number for d in documents):
            answer = self._post("/", {"nhs_number": nhs_number})
            patient = answer.headers.get("Location", "")
            if answer.status_code != 302 or nhs_number in patient:
                raise RuntimeError(f"opening {nhs_number} gave {answer.status_code}")
            for document in (d for d in documents if d.nhs_number == nhs_number):
                page = self.http.get(patient, params={"keyword": document.title})
                links = [
                    url
                    for url, text in LINK.findall(page.text)
                    if html.unescape(text) == document.title
                ]
                if len(links) != 1:
                    raise RuntimeError(f"{document.title!r} is not listed once for its patient")
                urls[document.label] = links[0] + "download"
        return urls

    def tab(self) -> httpx.Client:
        """Another connection with the same session, as a second browser tab."""
        return httpx.Client(base_url=self.base_url, cookies=self.http.cookies, timeout=300)


def sandbox_binary(http: httpx.Client, sandbox_url: str, document: Document) -> tuple[str, Any]:
    """Return the document's Binary URL at the sandbox and the auth the app would send."""
    config = ClientConfig(consumer=CONSUMER, timeouts=Timeouts(read=120, binary_read=300))
    directory = SpineDirectory(f"{sandbox_url}/spine-directory/FHIR/R4", http=http)
    endpoint = directory.provider_endpoint(document.practice_ods, Interactions.DOCUMENTS_SEARCH)
    client = GPConnectClient(config, user=USER, endpoint=endpoint, http=http)
    patient = client.find_patient(document.nhs_number).patient
    assert patient is not None
    listed = [d for d in client.search_documents(patient.id).documents if d.id == document.id]
    if len(listed) != 1 or listed[0].url is None:
        raise RuntimeError(f"the sandbox does not list {document.id} once")
    auth = GPConnectAuth(CONSUMER, USER, endpoint, Interactions.DOCUMENTS_BINARY)
    return listed[0].url, auth


# -- the measurements ------------------------------------------------------------------------


@dataclass
class Transfer:
    seconds: float
    ttfb: float  # seconds to the first byte of the body
    size: int
    headers: httpx.Headers

    @property
    def server_ms(self) -> float:
        """The app's own time to the response (its Server-Timing header), in ms."""
        match = re.search(r"app;dur=([\d.]+)", self.headers.get("Server-Timing", ""))
        if match is None:
            raise RuntimeError("the view sent no Server-Timing header (SERVER_TIMING=1?)")
        return float(match.group(1))


def transfer(
    http: httpx.Client, url: str, auth: Any = None, digest: Any = None, *, expected: int = 0
) -> Transfer:
    """Download `url` with httpx's own reads, discarding the body (hashing it, if asked)."""
    size, first = 0, 0.0
    start = time.perf_counter()
    with http.stream("GET", url, auth=auth) as response:
        response.raise_for_status()
        for chunk in response.iter_bytes():
            if not first:
                first = time.perf_counter()
            size += len(chunk)
            if digest is not None:
                digest.update(chunk)
    seconds = time.perf_counter() - start
    expected = int(response.headers.get("Content-Length", expected))
    if expected and size != expected:
        raise RuntimeError(f"GET {url} gave {size} bytes, not {expected}")
    return Transfer(seconds, first - start, size, response.headers)


class PeakRss:
    """Peak RSS growth of some processes (the web workers, or this one) from now on.

    Linux keeps each process's RSS high-water mark (VmHWM in /proc/PID/status), which
    writing 5 to /proc/PID/clear_refs resets: exact, and free for the measured processes.
    Where that is not allowed, a thread samples RSS every 2 ms instead. The growth is
    summed over the processes: each one's peak minus its RSS at the start.
    """

    def __init__(self, pids: list[int]) -> None:
        self._processes = [psutil.Process(pid) for pid in pids]
        try:
            for pid in pids:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            self.exact = True
        except OSError:
            self.exact = False
        self.before: list[int] = [int(p.memory_info().rss) for p in self._processes]
        self.peak = list(self.before)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            for i, process in enumerate(self._processes):
                self.peak[i] = max(self.peak[i], int(process.memory_info().rss))
            time.sleep(0.002)

    @staticmethod
    def _high_water_mark(pid: int) -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def __enter__(self) -> PeakRss:
        if not self.exact:
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.exact:
            self.peak = [self._high_water_mark(p.pid) for p in self._processes]
        else:
            self._stop.set()
            self._thread.join()

    @property
    def growth_mib(self) -> float:
        pairs = zip(self.peak, self.before, strict=True)
        return sum(max(0, peak - before) for peak, before in pairs) / MiB


class CpuSeconds:
    """CPU seconds (user + system) that each group of processes spends from now on."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self._groups = {
            name: [psutil.Process(pid) for pid in pids] for name, pids in groups.items()
        }
        self.spent: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        return {
            name: float(sum(sum(p.cpu_times()[:2]) for p in processes))
            for name, processes in self._groups.items()
        }

    def __enter__(self) -> CpuSeconds:
        self._start = self._now()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.spent = {name: cpu - self._start[name] for name, cpu in self._now().items()}


def naive(sandbox_url: str, document: Document, warmup: Document) -> dict[str, float]:
    """In a fresh process: `.json()` + `b64decode`, timed after a warm-up; its RSS growth."""
    with httpx.Client(timeout=300) as http:
        url, auth = sandbox_binary(http, sandbox_url, document)
        warm_url, warm_auth = sandbox_binary(http, sandbox_url, warmup)

        def fetch(url: str, auth: Any) -> bytes:
            response = http.get(url, auth=auth)
            response.raise_for_status()
            return base64.b64decode(response.json()["content"])

        fetch(warm_url, warm_auth)  # imports, the pooled connection, the allocator
        with PeakRss([os.getpid()]) as rss:
            start = time.perf_counter()
            content = fetch(url, auth)
            seconds = time.perf_counter() - start
    if hashlib.sha256(content).hexdigest() != document.sha256:
        raise RuntimeError(f"naive decoded the wrong bytes for {document.id}")
    return {"seconds": seconds, "rss_growth_mib": rss.growth_mib}


def run_naive(sandbox_url: str, document: Document, warmup: Document) -> dict[str, float]:
    command = [sys.executable, __file__, "--naive", json.dumps(asdict(document))]
    command += ["--warmup", json.dumps(asdict(warmup)), "--sandbox-url", sandbox_url]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"the naive approach failed:\n{completed.stderr}")
    result: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def concurrently(browser: Browser, url: str, count: int, size: int) -> tuple[float, list[float]]:
    """Start `count` downloads of `url` together, each on its own connection.

    Return the seconds from the first request to the last byte, and each time to first byte.
    """
    barrier = threading.Barrier(count)
    starts: list[float] = []

    def one(_: int) -> tuple[float, float]:
        with browser.tab() as http:
            barrier.wait()
            starts.append(time.perf_counter())
            got = transfer(http, url, expected=size)
            return time.perf_counter(), got.ttfb

    with ThreadPoolExecutor(max_workers=count) as pool:
        done = list(pool.map(one, range(count)))
    return max(end for end, _ in done) - min(starts), [ttfb for _, ttfb in done]


def prefetched_states(var_dir: Path, document: Document) -> list[str]:
    with sqlite3.connect(f"file:{var_dir / 'db.sqlite3'}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT state FROM viewer_prefetcheddocument WHERE document_id = ? ORDER BY id",
            (document.id,),
        ).fetchall()
    return [str(row[0]) for row in rows]


def served_from_cache(var_dir: Path) -> int:
    with sqlite3.connect(f"file:{var_dir / 'db.sqlite3'}?mode=ro", uri=True) as connection:
        (count,) = connection.execute(
            "SELECT COUNT(*) FROM viewer_auditevent WHERE action = 'download' "
            "AND outcome = 'success' AND detail LIKE '%from the encrypted prefetch cache%'"
        ).fetchone()
    return int(count)


def ttfb_prefetched(setup: Setup, processes: Processes, repeat: int) -> list[Transfer]:
    """Times to first byte, in seconds, of the 4.6 MiB document from the prefetch cache.

    Starts a Celery worker (the app's own broker: Redis, or the file broker under VAR_DIR)
    after emptying the queue of what the live runs' lists asked for, opens the patient
    again so that a new prefetch is queued, waits for it to be ready, and times downloads
    as the live figure is timed. Each must be the document's very bytes, from the cache.
    """
    small = setup.documents[SMALL[0]]
    env, var_dir = setup.services.env, setup.services.var_dir
    celery = [sys.executable, "-m", "celery", "-A", "config"]
    subprocess.run([*celery, "purge", "-f"], cwd=ROOT, env=env, capture_output=True, check=True)
    processes.start(
        [*celery, "worker", "--pool", "solo", "--loglevel", "WARNING"],
        env,
        setup.services.var_dir.parent / "worker.log",
        CPUS.outside,
    )
    before = len(prefetched_states(var_dir, small))
    url = setup.browser.download_urls([small])[small.label]
    deadline = time.monotonic() + 120
    while prefetched_states(var_dir, small)[before:] != ["ready"]:
        if time.monotonic() > deadline:
            log = (setup.services.var_dir.parent / "worker.log").read_text()[-3000:]
            raise RuntimeError(f"the prefetch never became ready:\n{log}")
        time.sleep(0.1)
    cached_before = served_from_cache(var_dir)
    digest = hashlib.sha256()
    transfer(setup.browser.http, url, digest=digest)  # warm up, and check the bytes
    if digest.hexdigest() != small.sha256:
        raise RuntimeError("the prefetch cache sent the wrong bytes")
    runs = [transfer(setup.browser.http, url, expected=small.size) for _ in range(repeat)]
    if served_from_cache(var_dir) - cached_before != repeat + 1:
        raise RuntimeError("a 'prefetched' download did not come from the prefetch cache")
    return runs


@dataclass
class Outcome:
    """What a client saw of a download that the practice stopped sending half way."""

    status: int
    transfer_encoding: str
    received: int
    error: str  # the exception httpx raised, or "" if the body looked complete
    last_chunk: bool  # the raw socket saw the final zero-length chunk

    def failed(self, size: int) -> bool:
        """True if a browser would report a failed download, not save a short file."""
        return (
            self.status == 200
            and self.transfer_encoding == "chunked"
            and bool(self.error)
            and self.received < size
            and not self.last_chunk
        )


def stopped_half_way(browser: Browser, url: str) -> Outcome:
    """Download the faulty document with httpx, then again over a raw socket."""
    received, error = 0, ""
    with browser.tab() as http, http.stream("GET", url) as response:
        try:
            for chunk in response.iter_bytes():
                received += len(chunk)
        except httpx.HTTPError as exc:
            error = type(exc).__name__
    port = int(browser.base_url.rsplit(":", 1)[1])
    request = (
        f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Cookie: sessionid={browser.http.cookies['sessionid']}\r\nConnection: close\r\n\r\n"
    )
    raw = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(request.encode())
        while data := sock.recv(MiB):
            raw += data
    return Outcome(
        status=response.status_code,
        transfer_encoding=response.headers.get("Transfer-Encoding", ""),
        received=received,
        error=error,
        last_chunk=raw.endswith(b"\r\n0\r\n\r\n"),
    )


def audited_failures(var_dir: Path) -> list[str]:
    """The details of the failed downloads in the audit trail (the database read-only)."""
    with sqlite3.connect(f"file:{var_dir / 'db.sqlite3'}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT detail FROM viewer_auditevent WHERE action = 'download' "
            "AND outcome = 'failure' ORDER BY id"
        ).fetchall()
    return [str(row[0]) for row in rows]


# -- the figures -----------------------------------------------------------------------------


@dataclass
class Runs:
    """One document's interleaved runs."""

    raw: list[Transfer] = field(default_factory=list)
    view: list[Transfer] = field(default_factory=list)
    view_rss: list[float] = field(default_factory=list)
    idle: list[Transfer] = field(default_factory=list)  # a signed-in request doing nothing
    naive: list[dict[str, float]] = field(default_factory=list)
    raw_cpu: list[dict[str, float]] = field(default_factory=list)
    view_cpu: list[dict[str, float]] = field(default_factory=list)
    rss_exact: bool = True

    def mibps(self, size: int, kind: str) -> float:
        if kind == "naive":
            return size / MiB / statistics.median(r["seconds"] for r in self.naive)
        runs: list[Transfer] = getattr(self, kind)
        return size / MiB / statistics.median(t.seconds for t in runs)

    def ttfb_ms(self, kind: str) -> float:
        runs: list[Transfer] = getattr(self, kind)
        return statistics.median(t.ttfb for t in runs) * 1000

    def cpu(self, kind: str) -> dict[str, float]:
        runs: list[dict[str, float]] = getattr(self, f"{kind}_cpu")
        return {name: statistics.median(r[name] for r in runs) for name in runs[0]}


@dataclass
class Row:
    figure: str
    value: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    ok: bool | None = None  # None: no target

    @property
    def verdict(self) -> str:
        return {None: "", True: "ok", False: "MISSED"}[self.ok]


def document_rows(document: Document, runs: Runs) -> list[Row]:
    label, size = document.label, document.size
    raw, view, naive = (runs.mibps(size, kind) for kind in ("raw", "view", "naive"))
    rss = max(runs.view_rss)
    naive_rss = max(r["rss_growth_mib"] for r in runs.naive)
    limited = label == LARGE[0]  # the issue sets the memory target at 100 MB
    ttfb, raw_ttfb = runs.ttfb_ms("view"), runs.ttfb_ms("raw")
    return [
        Row(
            f"{label}: view, throughput",
            f"{view:.0f} MiB/s",
            f"raw {raw:.0f} MiB/s",
            f"{view / raw:.2f}x",
            f">= {RATIO_TARGET}x raw",
            view / raw >= RATIO_TARGET,
        ),
        Row(
            f"{label}: naive, throughput",
            f"{naive:.0f} MiB/s",
            f"raw {raw:.0f} MiB/s",
            f"{naive / raw:.2f}x",
        ),
        Row(
            f"{label}: view, web RSS growth",
            f"{rss:.1f} MiB",
            f"naive {naive_rss:.1f} MiB",
            f"{rss / naive_rss:.3f}x",
            f"<= {RSS_TARGET_MIB:g} MiB" if limited else "",
            rss <= RSS_TARGET_MIB if limited else None,
        ),
        Row(
            f"{label}: view, time to first byte (live)",
            f"{ttfb:.1f} ms",
            f"raw {raw_ttfb:.1f} ms",
            f"{ttfb / raw_ttfb:.1f}x",
        ),
    ]


def fixed_cost_rows(letter: Document, letter_runs: Runs, small: Document, runs: Runs) -> list[Row]:
    """What one download costs whatever its size, and what that alone leaves of the ratio.

    A 4 KiB letter through the view takes the signed-in request's fixed work (gunicorn,
    Django, the session, the authorisation, the audit, one more hop) and almost no
    streaming; the same letter raw takes almost nothing. The difference added to the raw
    transfer of the 4.6 MiB document bounds the ratio any view with that fixed cost can
    reach, however well it streams. Next to it, a signed-in request that does nothing at
    all (the rows' status poll, asking about no document): the part of that fixed cost
    which is the server's and the framework's, before any work of the download's own.
    """
    view_ms = statistics.median(t.seconds for t in letter_runs.view) * 1000
    raw_ms = statistics.median(t.seconds for t in letter_runs.raw) * 1000
    idle_ms = statistics.median(t.seconds for t in letter_runs.idle) * 1000
    fixed_ms = view_ms - raw_ms
    raw_small_ms = statistics.median(t.seconds for t in runs.raw) * 1000
    bound = raw_small_ms / (raw_small_ms + fixed_ms)
    return [
        Row(
            f"{letter.label} letter: view, time",
            f"{view_ms:.1f} ms",
            f"raw {raw_ms:.1f} ms",
            f"{view_ms / raw_ms:.1f}x",
        ),
        Row(
            "a signed-in request doing nothing, time",
            f"{idle_ms:.1f} ms",
            f"letter {view_ms:.1f} ms",
            f"{idle_ms / view_ms:.2f}x",
        ),
        Row(
            f"{small.label}: ratio with only that fixed cost",
            f"{bound:.2f}x",
            f"fixed {fixed_ms:.1f} ms",
            "",
        ),
    ]


def prefetched_rows(runs: Runs, size: int, prefetched: list[Transfer]) -> list[Row]:
    """The prefetched document next to the live one: first byte (the app's time, then the
    client's) and throughput, which is what a clinician gets once the prefetch is ready."""
    live = runs.view
    cached = size / MiB / statistics.median(t.seconds for t in prefetched)
    raw = runs.mibps(size, "raw")
    server = statistics.median(t.server_ms for t in prefetched)
    live_server = statistics.median(t.server_ms for t in live)
    client = statistics.median(t.ttfb for t in prefetched) * 1000
    live_client = statistics.median(t.ttfb for t in live) * 1000
    return [
        Row(
            f"{SMALL[0]}: server time to first byte (prefetched)",
            f"{server:.1f} ms",
            f"live {live_server:.1f} ms",
            f"{server / live_server:.2f}x",
            f"<= {PREFETCHED_TTFB_TARGET_MS:g} ms",
            server <= PREFETCHED_TTFB_TARGET_MS,
        ),
        Row(
            f"{SMALL[0]}: time to first byte (prefetched)",
            f"{client:.1f} ms",
            f"live {live_client:.1f} ms",
            f"{client / live_client:.2f}x",
        ),
        Row(
            f"{SMALL[0]}: view, throughput (prefetched)",
            f"{cached:.0f} MiB/s",
            f"raw {raw:.0f} MiB/s",
            f"{cached / raw:.2f}x",
        ),
    ]


def print_table(rows: list[Row], notes: list[str]) -> None:
    header = f"{'figure':<44}{'value':>14}  {'baseline':<22}{'ratio':>8}  {'target':<14}verdict"
    print("\n" + header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.figure:<44}{row.value:>14}  {row.baseline:<22}{row.ratio:>8}  "
            f"{row.target:<14}{row.verdict}"
        )
    print("\n" + "\n".join(notes))


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Setup:
    """Everything running and signed in, and the URLs of each document both ways."""

    services: Services
    browser: Browser
    direct: httpx.Client  # to the sandbox
    documents: dict[str, Document]
    view_urls: dict[str, str]
    raw_urls: dict[str, tuple[str, Any]]


def set_up(temp: Path, processes: Processes) -> Setup:
    documents = sandbox_documents(temp / "sandbox")
    small, letter, large, faulty = (
        documents[label] for label, _, _ in (SMALL, LETTER, LARGE, FAULTY)
    )
    services = start_services(temp, processes, faulty)
    browser = Browser(services.web_url)
    browser.sign_in()
    view_urls = browser.download_urls([small, letter, large, faulty])
    direct = httpx.Client(timeout=300)
    raw_urls = {
        d.label: sandbox_binary(direct, services.sandbox_url, d) for d in (small, letter, large)
    }

    # Warm up: imports, pooled connections, each worker's cached document list; and check
    # that the view sends the sandbox's very bytes.
    for document in (small, letter, large):
        digest = hashlib.sha256()
        transfer(browser.http, view_urls[document.label], digest=digest)
        if digest.hexdigest() != document.sha256:
            raise RuntimeError(f"the view sent the wrong bytes for {document.label}")
        transfer(direct, *raw_urls[document.label])
    concurrently(browser, view_urls[small.label], CONCURRENT, small.size)
    return Setup(services, browser, direct, documents, view_urls, raw_urls)


def measure_documents(setup: Setup, repeat: int, verbose: bool) -> dict[str, Runs]:
    """Raw, view and naive for each document, interleaved."""
    small, large = setup.documents[SMALL[0]], setup.documents[LARGE[0]]
    letter = setup.documents[LETTER[0]]
    results = {small.label: Runs(), letter.label: Runs(), large.label: Runs()}
    # The rows' status poll with nothing to ask about: a signed-in request that does no
    # work of its own (session, user, role, patient context, an empty partial).
    poll = setup.view_urls[letter.label].split("/documents/")[0] + "/prefetch-status"
    for _ in range(repeat):
        for _ in range(LETTER_RUNS):
            results[letter.label].raw.append(transfer(setup.direct, *setup.raw_urls[letter.label]))
            results[letter.label].view.append(
                transfer(setup.browser.http, setup.view_urls[letter.label], expected=letter.size)
            )
            results[letter.label].idle.append(transfer(setup.browser.http, poll))
        for document in (small, large):
            runs = results[document.label]
            workers = setup.services.workers()
            groups = {
                "sandbox": [setup.services.sandbox.pid],
                "web": workers,
                "client": [os.getpid()],
            }
            with CpuSeconds(groups) as cpu:
                runs.raw.append(transfer(setup.direct, *setup.raw_urls[document.label]))
            runs.raw_cpu.append(cpu.spent)
            url = setup.view_urls[document.label]
            with CpuSeconds(groups) as cpu, PeakRss(workers) as rss:
                runs.view.append(transfer(setup.browser.http, url, expected=document.size))
            runs.view_cpu.append(cpu.spent)
            runs.view_rss.append(rss.growth_mib)
            runs.rss_exact = runs.rss_exact and rss.exact
            runs.naive.append(run_naive(setup.services.sandbox_url, document, small))
            if verbose:
                view = runs.view[-1]
                print(
                    f"  {document.label}: raw {runs.raw[-1].seconds:.3f} s, view {view.seconds:.3f} s"
                    f" (first byte {view.ttfb * 1000:.0f} ms, {runs.view_rss[-1]:.1f} MiB), "
                    f"naive {runs.naive[-1]['seconds']:.3f} s",
                    flush=True,
                )
    return results


def concurrent_rows(setup: Setup, repeat: int, alone: Runs) -> list[Row]:
    """The concurrent downloads, next to one download of the same document."""
    small = setup.documents[SMALL[0]]
    throughputs, growths, slowest = [], [], []
    for _ in range(repeat):
        with PeakRss(setup.services.workers()) as rss:
            wall, ttfbs = concurrently(
                setup.browser, setup.view_urls[small.label], CONCURRENT, small.size
            )
        throughputs.append(small.size * CONCURRENT / MiB / wall)
        growths.append(rss.growth_mib)
        slowest.append(max(ttfbs) * 1000)
    one, one_rss, one_ttfb = (
        alone.mibps(small.size, "view"),
        max(alone.view_rss),
        alone.ttfb_ms("view"),
    )
    together, peak, last = statistics.median(throughputs), max(growths), statistics.median(slowest)
    many = f"{CONCURRENT} x {small.label} at once"
    return [
        Row(
            f"{many}: throughput",
            f"{together:.0f} MiB/s",
            f"1 alone {one:.0f} MiB/s",
            f"{together / one:.2f}x",
        ),
        Row(
            f"{many}: web RSS growth",
            f"{peak:.1f} MiB",
            f"1 alone {one_rss:.1f} MiB",
            f"{peak / max(one_rss, 0.1):.1f}x",
        ),
        Row(
            f"{many}: slowest first byte",
            f"{last:.0f} ms",
            f"1 alone {one_ttfb:.1f} ms",
            f"{last / one_ttfb:.0f}x",
        ),
    ]


def behaviour_rows(setup: Setup, headers: httpx.Headers) -> tuple[list[Row], list[str]]:
    """Chunked framing, a download the practice stops half way, and the logs."""
    chunked = headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in headers
    faulty, var_dir = setup.documents[FAULTY[0]], setup.services.var_dir
    before = len(audited_failures(var_dir))
    outcome = stopped_half_way(setup.browser, setup.view_urls[faulty.label])
    failed = outcome.failed(faulty.size)
    audited = audited_failures(var_dir)[before:]
    log = setup.services.web_log.read_text(errors="replace")
    leaked = sorted({d.nhs_number for d in setup.documents.values() if d.nhs_number in log})
    rows = [
        Row("view body framing", "chunked" if chunked else "length", target="chunked", ok=chunked),
        Row(
            f"{FAULT}: what the client gets",
            "failed" if failed else "a whole file",
            target="failed",
            ok=failed,
        ),
        Row(
            f"{FAULT}: audited as failed",
            f"{len(audited)} of 2",
            target="2 of 2",
            ok=len(audited) == 2 and all("stopped part way" in a for a in audited),
        ),
        Row("NHS numbers in gunicorn's logs", str(len(leaked)), target="0", ok=not leaked),
    ]
    last_chunk = (
        "the final zero-length chunk came" if outcome.last_chunk else "no final zero-length chunk"
    )
    notes = [
        f"{FAULT} ({faulty.label} document): HTTP {outcome.status}, Transfer-Encoding "
        f"{outcome.transfer_encoding or '-'}, {outcome.received / MiB:.1f} MiB, then "
        f"{outcome.error or 'the end: the body looked complete'}; over a raw socket, {last_chunk}.",
        *(f"  audit: {detail}" for detail in audited),
    ]
    return rows, notes


def measure(
    args: argparse.Namespace, temp: Path, processes: Processes
) -> tuple[list[Row], list[str]]:
    setup = set_up(temp, processes)
    small, large = setup.documents[SMALL[0]], setup.documents[LARGE[0]]
    results = measure_documents(setup, args.repeat, args.verbose)
    letter = setup.documents[LETTER[0]]
    rows = document_rows(small, results[small.label])
    rows += fixed_cost_rows(letter, results[letter.label], small, results[small.label])
    rows += document_rows(large, results[large.label])
    after_documents = len(rows)
    rows += concurrent_rows(setup, args.repeat, results[small.label])
    behaviours, fault_notes = behaviour_rows(setup, results[large.label].view[-1].headers)
    rows += behaviours
    # Last: the worker it starts would otherwise prefetch what the other figures fetch live.
    prefetched = ttfb_prefetched(setup, processes, args.repeat)
    rows[after_documents:after_documents] = prefetched_rows(
        results[small.label], small.size, prefetched
    )
    setup.direct.close()
    setup.browser.http.close()

    exact = all(runs.rss_exact for runs in results.values())
    raw, view = results[large.label].cpu("raw"), results[large.label].cpu("view")
    notes = [
        f"Medians of {args.repeat} interleaved runs; RSS growth: the worst run, summed over the "
        f"{WORKERS} gunicorn workers ({THREADS} threads each), "
        f"{'VmHWM' if exact else 'sampled every 2 ms'}; naive: its own process.",
        f"{small.label} = {small.size:,} bytes (the largest document under 5 MB), {large.label} = "
        f"{large.size:,} bytes; raw = the Binary JSON from the sandbox, 4/3 of the document.",
        f"CPU seconds per {large.label} download on {psutil.cpu_count()} CPUs: raw: sandbox "
        f"{raw['sandbox']:.2f}, client {raw['client']:.2f}; view: sandbox {view['sandbox']:.2f}, "
        f"web {view['web']:.2f}, client {view['client']:.2f}; {CPUS.describe()}.",
        budget_note(results[small.label], results[letter.label]),
        *fault_notes,
    ]
    return rows, notes


def budget_note(runs: Runs, letter_runs: Runs) -> str:
    """How much time 0.8x leaves the view for the 4.6 MiB document, next to the floor."""
    raw_ms = statistics.median(t.seconds for t in runs.raw) * 1000
    budget_ms = raw_ms * (1 / RATIO_TARGET - 1)
    idle_ms = statistics.median(t.seconds for t in letter_runs.idle) * 1000
    return (
        f"At {RATIO_TARGET}x, the view may add {budget_ms:.1f} ms to the raw {raw_ms:.1f} ms "
        f"transfer of the {SMALL[0]} document; a signed-in request that does nothing takes "
        f"{idle_ms:.1f} ms, and the download must also ask the practice, one more hop."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each figure (median)")
    parser.add_argument("--verbose", action="store_true", help="print every run")
    parser.add_argument("--naive", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", help=argparse.SUPPRESS)
    parser.add_argument("--sandbox-url", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.naive:
        document = Document(**json.loads(args.naive))
        warmup = Document(**json.loads(args.warmup))
        print(json.dumps(naive(args.sandbox_url, document, warmup)))
        return 0

    # A plain `kill` ends the run as Ctrl-C does: through the clean-up below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if CPUS.outside:
        os.sched_setaffinity(0, CPUS.outside)  # the client, and the naive runs it starts
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-download-") as temp, Processes() as processes:
        rows, notes = measure(args, Path(temp), processes)
    print_table(rows, notes)
    print(f"({time.perf_counter() - started:.0f} s in all)")

    missed = [f"{row.figure}: {row.value} (target {row.target})" for row in rows if row.ok is False]
    if missed:
        print("\nTARGET MISSED:\n  " + "\n  ".join(missed))
        return 1
    print("All targets met.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
