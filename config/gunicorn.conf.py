"""gunicorn settings for the viewer in production: `gunicorn -c config/gunicorn.conf.py`.

Tuned for what this app mostly does that is slow: relaying a document from a GP practice,
which can take as long as the Spine takes (the library waits up to 120 s between reads of a
Binary). Everything a deployment changes comes from the environment:

    BIND                 address to listen on (default 127.0.0.1:8000, behind a proxy)
    WEB_CONCURRENCY      worker processes (default 2)
    GUNICORN_THREADS     threads per worker, i.e. requests each worker serves at once (default 8)
    GUNICORN_KEEPALIVE   seconds an idle client connection is kept open (default 5)
    FORWARDED_ALLOW_IPS  the proxy addresses whose X-Forwarded-Proto is believed
                         (default 127.0.0.1,::1)
"""

from __future__ import annotations

import os


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, not {value!r}") from None


wsgi_app = "config.wsgi:application"
bind = os.environ.get("BIND", "").strip() or "127.0.0.1:8000"
proc_name = "gpconnect-viewer"

# A download holds its thread for as long as the practice takes to send the document, while
# the thread itself mostly waits on the network. Threads keep a slow practice from tying up
# a whole process (as the sync worker would), and each download's memory stays small
# because the view streams (bench/download_view.py measures both).
worker_class = "gthread"
workers = _env_int("WEB_CONCURRENCY", 2)
threads = _env_int("GUNICORN_THREADS", 8)

# Longer than the library's 120 s wait between reads of a Binary. With gthread the heartbeat
# comes from each worker's main loop, not from the request threads, so this only catches a
# hung process and never cuts a slow download; with the sync worker it would bound every
# request, and must then stay above those 120 s.
timeout = 150
# On a deploy or restart (SIGTERM, SIGHUP), in-flight downloads get this long to finish.
# The orchestrator's own grace period (docker stop -t, Kubernetes
# terminationGracePeriodSeconds) must be longer, or it kills them first.
graceful_timeout = 130
# Behind a load balancer that reuses connections, set this above the balancer's idle timeout
# (e.g. 65 behind a 60 s one), so gunicorn never closes a connection the balancer is about to
# reuse. Idle kept-alive connections wait in the worker's poller and hold no thread.
keepalive = _env_int("GUNICORN_KEEPALIVE", 5)

# Only these proxies may say a request came over https: gunicorn then gives Django an https
# request (wsgi.url_scheme), so leave Django's TRUST_X_FORWARDED_PROTO off, since gunicorn
# still passes X-Forwarded-Proto on from anyone. Never "*" unless only the proxy can connect.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "").strip() or "127.0.0.1,::1"

# Our longest URL is a document list with its filters (a keyword of up to 100 characters,
# percent-encoded): well under 2 KB. Anything longer is refused before Django sees it.
limit_request_line = 2048

# The access log goes to stdout with the app's own logs. It has the path only: the query
# string can hold a search keyword, and the referrer another page's query string, so
# neither is logged (never %(r)s, %(q)s or %(f)s). Paths carry opaque ids, never an NHS
# number. %(B)s is the bytes actually sent: a download cut short shows as fewer bytes than
# the document's size. request_id is the X-Request-ID the app gave the response.
accesslog = "-"
access_log_format = (
    '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms request_id=%({x-request-id}o)s'
)

# The download view sends no Content-Length (the provider's declared size can be wrong), so
# gunicorn streams the body with chunked transfer encoding. That is what makes a failure
# part way through visible: gunicorn closes the connection without the final zero-length
# chunk, and the browser reports a failed download instead of saving a short file as if it
# were complete. This needs HTTP/1.1 all the way: to an HTTP/1.0 client gunicorn sends the
# body unframed and ends it with a clean close, so a cut-short document looks whole. Browsers
# speak 1.1, but a proxy in front must too (nginx: `proxy_http_version 1.1;`, not its default).

# Each worker's heartbeat is an fchmod of a temporary file, about once a second; on a
# disk-backed /tmp (as in many containers) it can stall and make a healthy worker look hung.
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"

# gunicorn 25.1+ opens a management socket under $HOME by default; nothing here uses it, and
# any local process running as our user could resize or stop the server through it.
control_socket_disable = True
