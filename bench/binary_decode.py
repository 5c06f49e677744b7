"""Benchmark: stream a large document out of a GP Connect Binary body.

Serves a pseudo-random document (100 MiB by default) as a FHIR Binary JSON body from a local
HTTP server in its own process, then measures, each run in a fresh process so that peak memory
is isolated:

  raw      httpx reading the same body and discarding it: the ceiling for any decoder
  naive    httpx `.json()` then `base64.b64decode` of `content`: what a developer would write
  decode   httpx streaming into `gpconnect.binary.decode(response.iter_bytes(...))`
  client   `GPConnectClient.open_binary(url)`: the path the viewer uses

Each measuring process first fetches a 5 MB document (warm-up), then times one download that
discards the decoded bytes, as the raw transfer discards the body, then downloads again and
verifies the decoded bytes by sha256 (the "with sha256" column; hashing 100 MiB alone takes
about as long as decoding it). Peak RSS growth covers both downloads. Targets, for our paths on
the plain body: at least 0.8x the raw transfer's throughput and at most 32 MiB of peak RSS
growth. Exits 1 if a target is missed.

    .venv/bin/python bench/binary_decode.py                 # 100 MiB, 3 runs each
    .venv/bin/python bench/binary_decode.py --size-mb 10    # a quick check
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
SERVICE_ROOT_PATH = "/A11111/STU3/1/gpconnect/documents"
RATIO_TARGET = 0.8
RSS_TARGET_MIB = 32.0
# Document bytes per generated block: a multiple of 3 (no padding inside the base64) and of
# 57, so that 76-character lines never straddle blocks.
BLOCK = 57 * 1024 * 16
# Each measuring process first fetches a document of the specification's maximum size, as a
# viewer process would have done before: lazy imports, the pooled connection and the memory
# allocator are then warm, and only the large document is measured.
WARMUP_SIZE = 5 * 1000 * 1000

VARIANTS = {
    "plain": "base64 on one line, contentType before the data",
    "escaped": "\\r\\n every 76 chars, '/' as \\/, '+' as \\u002B (.NET), contentType after",
}
APPROACHES = {
    "raw": "raw transfer (httpx, discard)",
    "naive": "naive: .json() + b64decode",
    "decode": "ours: decode(iter_bytes)",
    "client": "ours: GPConnectClient.open_binary",
}
OURS = ("decode", "client")


# -- the document and its Binary bodies ----------------------------------------------------


def document_blocks(size: int, seed: int = 20240601) -> Iterator[bytes]:
    rnd = random.Random(seed)
    remaining = size
    while remaining:
        block = rnd.randbytes(min(BLOCK, remaining))
        remaining -= len(block)
        yield block


def write_bodies(directory: Path, size: int) -> str:
    """Write one Binary body per variant into `directory`; return the document's sha256."""
    import pybase64

    warmup = pybase64.b64encode(random.Random(0).randbytes(WARMUP_SIZE))
    (directory / "warmup.json").write_bytes(
        b'{"resourceType": "Binary", "contentType": "application/pdf", "content": "'
        + warmup
        + b'"}'
    )
    digest = hashlib.sha256()
    files = {name: (directory / f"{name}.json").open("wb") for name in VARIANTS}
    try:
        files["plain"].write(
            b'{"resourceType": "Binary", "id": "bench-plain", "meta": {"versionId": "1"}, '
            b'"contentType": "application/pdf", "content": "'
        )
        files["escaped"].write(b'{"resourceType": "Binary", "id": "bench-escaped", "content": "')
        first = True
        for block in document_blocks(size):
            digest.update(block)
            encoded = pybase64.b64encode(block)
            files["plain"].write(encoded)
            lines = b"\\r\\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
            escaped = lines.replace(b"/", b"\\/").replace(b"+", b"\\u002B")
            files["escaped"].write(escaped if first else b"\\r\\n" + escaped)
            first = False
        files["plain"].write(b'"}\n')
        files["escaped"].write(b'", "contentType": "application/pdf"}\n')
    finally:
        for file in files.values():
            file.close()
    return digest.hexdigest()


# -- the server (its own process) --------------------------------------------------------


def serve(directory: Path) -> None:
    """Serve `directory/<variant>.json` at <service root>/Binary/<variant>; print the port."""
    log = (directory / "requests.log").open("a", buffering=1)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            prefix = f"{SERVICE_ROOT_PATH}/Binary/"
            name = self.path[len(prefix) :] if self.path.startswith(prefix) else ""
            path = directory / f"{name}.json"
            # The GP Connect headers are not checked, only noted.
            headers = sorted(k for k in self.headers if k.lower().startswith("ssp-"))
            if self.headers.get("Authorization"):
                headers.append("Authorization")
            log.write(json.dumps({"path": self.path, "headers": headers}) + "\n")
            if name not in (*VARIANTS, "warmup") or not path.exists():
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json;charset=utf-8")
            self.send_header("Content-Length", str(path.stat().st_size))
            self.end_headers()
            with path.open("rb") as body:
                self.connection.sendfile(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


# -- one measurement (its own process) ----------------------------------------------------


class PeakRss:
    """Peak RSS growth of this process from now on.

    Linux keeps a high-water mark of RSS (`VmHWM` in /proc/self/status), which writing 5 to
    /proc/self/clear_refs resets. (`ru_maxrss` is no use here: after fork and exec it starts
    from the parent's peak.) Where that is not allowed, a thread samples RSS every 2 ms
    instead: less exact, and its GIL traffic slows the run being measured.
    """

    def __init__(self, interval: float = 0.002) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.exact = self._high_water_mark() is not None
        except OSError:
            self.exact = False
        self.before = self._process.memory_info().rss
        self.peak = self.before
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _high_water_mark() -> int | None:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(self._interval)

    def __enter__(self) -> PeakRss:
        if not self.exact:
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.exact:
            self.peak = max(self.peak, self._high_water_mark() or 0)
        else:
            self._stop.set()
            self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.before


class Sink:
    """Where the decoded bytes go: counted, and hashed with sha256 if asked."""

    def __init__(self, *, verify: bool) -> None:
        self.size = 0
        self._digest = hashlib.sha256() if verify else None

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self._digest is not None:
            self._digest.update(data)

    def hexdigest(self) -> str | None:
        return self._digest.hexdigest() if self._digest is not None else None


def measure(approach: str, url: str, chunk_size: int, client_read_size: int) -> dict[str, Any]:
    """Warm up, time one run that discards the bytes, then verify a second run by sha256."""
    import httpx

    run = prepare(approach, url, chunk_size, client_read_size)
    with httpx.Client(timeout=300) as http:
        # Warm up (see WARMUP_SIZE): a viewer process holds one pooled client for many documents.
        run(http, Sink(verify=True), url.rsplit("/", 1)[0] + "/warmup")
        timed, checked = Sink(verify=False), Sink(verify=True)
        with PeakRss() as rss:
            start = time.perf_counter()
            details = run(http, timed, url)
            seconds = time.perf_counter() - start
            if approach != "raw":  # the raw transfer has nothing to verify
                start = time.perf_counter()
                run(http, checked, url)
                seconds_with_hash = time.perf_counter() - start
            else:
                seconds_with_hash = seconds
    return {
        "seconds": seconds,
        "seconds_with_hash": seconds_with_hash,
        "decoded": checked.size,
        "sha256": checked.hexdigest(),
        "rss_growth": rss.growth,
        "rss_exact": rss.exact,
        **details,
    }


def prepare(
    approach: str, url: str, chunk_size: int, client_read_size: int = -1
) -> Callable[[Any, Sink, str], dict[str, Any]]:
    """Import and set up everything before the clock starts; return the timed run."""

    def chunks(response: Any) -> Iterator[bytes]:
        return response.iter_bytes(chunk_size or None)  # type: ignore[no-any-return]

    if approach == "raw":

        def run(http: Any, sink: Sink, url: str) -> dict[str, Any]:
            size = 0
            with http.stream("GET", url) as response:
                response.raise_for_status()
                for chunk in response.iter_bytes():  # httpx's own 64 KiB reads: the ceiling
                    size += len(chunk)
                expected = int(response.headers["Content-Length"])
            if size != expected:
                raise RuntimeError(f"read {size} bytes of {expected}")
            return {"body": size}

    elif approach == "naive":
        import base64

        def run(http: Any, sink: Sink, url: str) -> dict[str, Any]:
            response = http.get(url)
            response.raise_for_status()
            binary = response.json()
            document = base64.b64decode(binary["content"])
            sink.write(document)
            return {"content_type": binary.get("contentType")}

    elif approach == "decode":
        from gpconnect.binary import decode

        def run(http: Any, sink: Sink, url: str) -> dict[str, Any]:
            with http.stream("GET", url) as response:
                response.raise_for_status()
                decoder = decode(chunks(response))
                for piece in decoder:
                    sink.write(piece)
            return {"content_type": decoder.content_type}

    elif approach == "client":
        from gpconnect import (
            ClientConfig,
            Consumer,
            GPConnectClient,
            ProviderEndpoint,
            RequestingUser,
        )

        config = ClientConfig(
            consumer=Consumer(
                asid="200000000359",
                ods_code="A11111",
                organisation_name="Bench",
                issuer="https://bench.example/",
            )
        )
        user = RequestingUser(local_user_id="bench", family_name="Bench")
        if client_read_size >= 0:  # a tuning experiment: override the client's read size
            import gpconnect.client

            gpconnect.client.BINARY_READ_SIZE = client_read_size or None  # type: ignore[misc]
        service_root = url.split("/Binary/")[0]
        endpoint = ProviderEndpoint(service_root=service_root, asid="918999198738")

        def run(http: Any, sink: Sink, url: str) -> dict[str, Any]:
            client = GPConnectClient(config, user=user, endpoint=endpoint, http=http)
            with client.open_binary(url) as binary:
                for piece in binary:
                    sink.write(piece)
                return {"content_type": binary.content_type, "trace_id": binary.trace_id}

    else:
        raise ValueError(f"unknown approach {approach!r}")
    return run


def client_available() -> bool:
    try:
        from gpconnect import GPConnectClient  # noqa: F401
    except ImportError:
        return False
    return True


# -- the orchestration ---------------------------------------------------------------------


def run_child(approach: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--measure",
        approach,
        "--url",
        url,
        "--chunk-size",
        str(args.chunk_size),
        "--client-read-size",
        str(args.client_read_size),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{approach} failed:\n{completed.stderr}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=float, default=100, help="document size in MiB")
    parser.add_argument("--repeat", type=int, default=3, help="runs per approach (median)")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated, of {list(VARIANTS)}"
    )
    parser.add_argument(
        "--approaches", default=",".join(APPROACHES), help=f"comma-separated, of {list(APPROACHES)}"
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=0,
        help="iter_bytes chunk size for the decode approach (0: httpx's own 64 KiB reads)",
    )
    parser.add_argument(
        "--client-read-size",
        type=int,
        default=-1,
        help="override gpconnect.client.BINARY_READ_SIZE for the client approach "
        "(0: None, httpx's own 64 KiB reads; default: leave it)",
    )
    parser.add_argument("--verbose", action="store_true", help="print every run")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve:
        serve(args.serve)
        return 0
    if args.measure:
        print(json.dumps(measure(args.measure, args.url, args.chunk_size, args.client_read_size)))
        return 0

    variants = [v for v in args.variants.split(",") if v]
    approaches = [a for a in args.approaches.split(",") if a]
    if "client" in approaches and not client_available():
        print("gpconnect.GPConnectClient is not available yet: measuring decode() only.")
        approaches.remove("client")
    size = int(args.size_mb * MiB)

    with tempfile.TemporaryDirectory(prefix="bench-binary-") as temp:
        directory = Path(temp)
        started = time.perf_counter()
        expected = write_bodies(directory, size)
        print(f"Generated a {size / MiB:g} MiB document in {time.perf_counter() - started:.1f} s.")
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(directory)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            failures = run_all(directory, port, variants, approaches, args, size, expected)
        finally:
            server.terminate()
            server.wait(timeout=10)
        log = (directory / "requests.log").read_text().splitlines()
        with_headers = sum(1 for line in log if "Ssp-TraceID" in json.loads(line)["headers"])
        print(
            f"The server answered {len(log)} requests; {with_headers} carried GP Connect headers."
        )

    if failures:
        print("\nTARGET MISSED:\n  " + "\n  ".join(failures))
        return 1
    print("\nAll targets met.")
    return 0


def run_all(
    directory: Path,
    port: int,
    variants: list[str],
    approaches: list[str],
    args: argparse.Namespace,
    size: int,
    expected: str,
) -> list[str]:
    failures = []
    for variant in variants:
        url = f"http://127.0.0.1:{port}{SERVICE_ROOT_PATH}/Binary/{variant}"
        body_size = (directory / f"{variant}.json").stat().st_size
        results: dict[str, list[dict[str, Any]]] = {a: [] for a in approaches}
        for _ in range(args.repeat):  # interleaved, so drift affects every approach alike
            for approach in approaches:
                result = run_child(approach, url, args)
                if approach != "raw" and (
                    result["sha256"] != expected or result["decoded"] != size
                ):
                    raise RuntimeError(f"{approach} decoded the wrong bytes: {result}")
                if approach != "raw" and result.get("content_type") != "application/pdf":
                    raise RuntimeError(f"{approach} got the wrong content type: {result}")
                results[approach].append(result)
                if args.verbose:
                    print(
                        f"  {variant} {approach}: {result['seconds']:.3f} s, "
                        f"{result['rss_growth'] / MiB:.1f} MiB RSS growth",
                        flush=True,
                    )

        print(
            f"\n{variant}: {VARIANTS[variant]}\n"
            f"{size / MiB:g} MiB document, {body_size / MiB:.1f} MiB body; median of "
            f"{args.repeat} runs, each in a fresh process; RSS: worst run"
        )
        header = (
            f"{'approach':<36}{'median s':>10}{'with sha256':>13}{'doc MiB/s':>11}"
            f"{'x raw':>8}{'peak RSS growth MiB':>21}"
        )
        print(header)
        print("-" * len(header))
        raw_seconds = (
            statistics.median(r["seconds"] for r in results["raw"]) if "raw" in results else None
        )
        for approach in approaches:
            runs = results[approach]
            seconds = statistics.median(r["seconds"] for r in runs)
            with_hash = statistics.median(r["seconds_with_hash"] for r in runs)
            rss = max(r["rss_growth"] for r in runs) / MiB
            ratio = raw_seconds / seconds if raw_seconds else float("nan")
            label = APPROACHES[approach]
            if approach == "decode" and args.chunk_size:
                label = f"ours: decode(iter_bytes({args.chunk_size}))"
            if approach == "client" and args.client_read_size >= 0:
                label = f"ours: open_binary, read {args.client_read_size or 'None'}"
            print(
                f"{label:<36}{seconds:>10.3f}{with_hash:>13.3f}"
                f"{size / MiB / seconds:>11.0f}{ratio:>8.2f}{rss:>21.1f}"
            )
            if approach in OURS and variant == "plain":
                if raw_seconds and ratio < RATIO_TARGET:
                    failures.append(
                        f"{label}: {ratio:.2f}x the raw transfer (target {RATIO_TARGET}x)"
                    )
                if rss > RSS_TARGET_MIB:
                    failures.append(
                        f"{label}: {rss:.1f} MiB RSS growth (target {RSS_TARGET_MIB:g} MiB)"
                    )
    return failures


if __name__ == "__main__":
    sys.exit(main())
