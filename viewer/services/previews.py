"""Previews of formats browsers cannot show, made on the server by Celery and kept encrypted.

- TIFF (every page) and BMP become PNG pages (Pillow), shown one at a time.
- Word processor documents (DOCX, DOC, RTF, ODT) become a PDF (LibreOffice headless),
  drawn by pdf.js like any other PDF.
- HTML is sanitised (nh3) and shown in a sandboxed frame that runs no script; XML is text.

The document page asks for a preview (`conversion_start`), which makes one
`ConvertedDocument` row per document (a unique constraint: one conversion however many
requests ask) and queues `viewer.tasks.convert_document`. `run_conversion`, the task's
body, fetches the document as the user who asked, converts it within limits (pixels per
page, pages, a LibreOffice time-out that kills its whole process group) and stores the
result as encrypted blobs. Every failure ends in a plain message, never a stuck task.
Rows and blobs go when they expire, at sign-out and when the session ends.

The converters are plain functions of bytes: printing (printing.py) uses them too.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import itertools
import logging
import os
import resource
import secrets
import signal
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import nh3
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.sessions.backends.base import SessionBase
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone
from PIL import Image

from gpconnect import (
    BinaryDecodeError,
    GPConnectError,
    Interactions,
    ProviderEndpoint,
)
from viewer import audit, encrypted_blobs, roles
from viewer.models import CONVERSION_PENDING, ConversionState, ConvertedDocument
from viewer.services import (
    UserLike,
    _client,
    _document_of,
    _is_letter,
    base_content_type,
    cache_ttl,
    document_key,
    max_document_bytes,
    session_alive,
)

logger = logging.getLogger(__name__)

WORD = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
ODT = "application/vnd.oasis.opendocument.text"

# What the server makes of each format for its preview: "pages" (PNG images), "pdf",
# "html" (sanitised) or "text". PDF, JPEG, PNG, GIF, text, audio and video need nothing.
CONVERSIONS: dict[str, str] = {
    "image/tiff": "pages",
    "image/bmp": "pages",
    "image/x-bmp": "pages",
    "image/x-ms-bmp": "pages",
    WORD: "pdf",
    "application/msword": "pdf",
    "application/rtf": "pdf",
    "text/rtf": "pdf",
    # GP systems label RTF letters text/richtext; LibreOffice reads them by their content.
    "text/richtext": "pdf",
    ODT: "pdf",
    "text/html": "html",
    "application/xml": "text",
    "text/xml": "text",
}

# The file name LibreOffice is given: it picks its import filter by content and suffix.
_OFFICE_SUFFIXES: dict[str, str] = {
    WORD: ".docx",
    "application/msword": ".doc",
    "application/rtf": ".rtf",
    "text/rtf": ".rtf",
    "text/richtext": ".rtf",
    ODT: ".odt",
    "text/html": ".html",
}

# What the first bytes of each word processor format must be. Anything else is refused
# rather than handed to LibreOffice, which would try its other import filters on it.
_OFFICE_MAGIC: dict[str, tuple[bytes, str]] = {
    ".docx": (b"PK\x03\x04", "a Word document"),
    ".odt": (b"PK\x03\x04", "an OpenDocument text"),
    ".doc": (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a Word 97–2003 document"),
    ".rtf": (b"{\\rtf", "an RTF document"),
}

_OUTPUT_TYPES = {
    "pages": "image/png",
    "pdf": "application/pdf",
    "html": "text/html; charset=utf-8",
    "text": "text/plain; charset=utf-8",
}

# Pillow reads only these: no exotic decoders for untrusted files.
IMAGE_FORMATS = ["TIFF", "BMP", "PNG", "JPEG", "GIF"]

# Sanitised HTML keeps the document's structure and text, nothing that runs or fetches:
# no scripts, styles, event handlers, forms, images or links out.
_HTML_TAGS = nh3.ALLOWED_TAGS - {"img", "a", "area", "map"}
_HTML_PAGE = """<!DOCTYPE html>
<html lang="en-GB"><head><meta charset="utf-8"><title>Document preview</title>
<style>body{{font-family:Arial,sans-serif;margin:1em;line-height:1.4}}
table{{border-collapse:collapse;margin:1em 0}}th,td{{border:1px solid #999;padding:.25em .6em;text-align:left}}</style>
</head><body>{body}</body></html>
"""


# How the converters' and the printer's messages end when downloading is the way out. Only
# these two: `without_download_advice` takes them off for a role that may not download.
DOWNLOAD_ADVICE = "Download it to open it."
RETRY_OR_DOWNLOAD = "Try again, or download it."


def without_download_advice(message: str) -> str:
    """The message for someone whose role may not download: no advice to do so."""
    if message.endswith(RETRY_OR_DOWNLOAD):
        return message.removesuffix(RETRY_OR_DOWNLOAD) + "Try again."
    return message.removesuffix(DOWNLOAD_ADVICE).rstrip()


class ConversionFailed(Exception):
    """A document could not be converted; `message` says why, for the person reading."""

    def __init__(self, message: str, *, trace_id: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.trace_id = trace_id


def conversion_kind(content_type: str) -> str:
    """Return how the server converts this format for preview, or "" if it does not."""
    return CONVERSIONS.get(base_content_type(content_type), "")


# The converters ---------------------------------------------------------------------------


def image_pages(data: bytes, *, first_only: bool = False) -> list[bytes]:
    """Return each page (frame) of an image as PNG bytes.

    Raises ConversionFailed for more than PREVIEW_MAX_PAGES pages, a page of more than
    PREVIEW_MAX_PIXELS pixels (a decompression bomb is refused before it is decoded), or
    a file Pillow cannot read.
    """
    max_pages = int(settings.PREVIEW_MAX_PAGES)
    max_pixels = int(settings.PREVIEW_MAX_PIXELS)
    pages: list[bytes] = []
    try:
        with warnings.catch_warnings():
            # Pillow warns, then refuses, past its own global limit: refuse at the warning.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
                for index in itertools.count():
                    try:
                        image.seek(index)
                    except EOFError:
                        break
                    if index >= max_pages:
                        raise ConversionFailed(
                            f"This image has more than {max_pages} pages, too many to show here. "
                            f"{DOWNLOAD_ADVICE}"
                        )
                    width, height = image.size
                    if width * height > max_pixels:
                        raise ConversionFailed(
                            f"Page {index + 1} of this image is {width} × {height} pixels, too "
                            f"large to convert safely. {DOWNLOAD_ADVICE}"
                        )
                    frame: Image.Image = image
                    if image.mode not in ("1", "L", "LA", "RGB", "RGBA"):
                        frame = image.convert("RGBA" if "A" in image.mode else "RGB")
                    out = io.BytesIO()
                    frame.save(out, "PNG")
                    pages.append(out.getvalue())
                    if first_only:
                        break
    except ConversionFailed:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ConversionFailed(
            f"This image is too large to convert safely. {DOWNLOAD_ADVICE}"
        ) from error
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as error:
        raise ConversionFailed(
            "This image could not be read: the file may be damaged or not the format it claims."
        ) from error
    if not pages:
        raise ConversionFailed("This image has no pages to show.")
    return pages


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


# The converter's own profile settings: it never follows a link out of the document to
# fetch anything (linked images, OLE links, included files from the web), and runs no
# macro. The network namespace below is the wall; this is the lock on the door behind it.
_PROFILE_SETTINGS = """<?xml version="1.0" encoding="UTF-8"?>
<oor:items xmlns:oor="http://openoffice.org/2001/registry" \
xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<item oor:path="/org.openoffice.Office.Common/Security/Scripting">\
<prop oor:name="BlockUntrustedRefererLinks" oor:op="fuse"><value>true</value></prop></item>
<item oor:path="/org.openoffice.Office.Common/Security/Scripting">\
<prop oor:name="MacroSecurityLevel" oor:op="fuse"><value>3</value></prop></item>
<item oor:path="/org.openoffice.Office.Common/Security/Scripting">\
<prop oor:name="DisableMacrosExecution" oor:op="fuse"><value>true</value></prop></item>
</oor:items>
"""

# LibreOffice's memory (address space) and the largest file it may write.
LIBREOFFICE_MEMORY_BYTES = 3 * 1024**3
LIBREOFFICE_FILE_BYTES = 512 * 1024**2
# The converter's own deadline, after ours: it dies even if the worker that started it
# was killed and never got to kill it. `timeout` sends TERM, then KILL this much later.
_KILL_AFTER_SECONDS = 5


@functools.cache
def network_isolation() -> list[str]:
    """Return the command prefix that runs a program with no network (`unshare -rn`).

    A new user and network namespace has only a loopback interface of its own, so nothing
    in a document can reach any server, ours included. Where the kernel refuses new
    namespaces (some containers), return no prefix and log a warning once: the profile
    settings still block links, but the isolation is gone.
    """
    command = ["unshare", "--user", "--map-root-user", "--net"]
    try:
        works = (
            subprocess.run(
                [*command, "true"], capture_output=True, timeout=10, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.SubprocessError):
        works = False
    if not works:
        logger.warning(
            "LibreOffice runs WITH network access: this kernel refuses `unshare -rn` (user "
            "and network namespaces); documents' links are still blocked by its profile"
        )
        return []
    return command


def _contain() -> None:
    """In the converter's process, before LibreOffice starts: limits, and death with us."""
    resource.setrlimit(resource.RLIMIT_AS, (LIBREOFFICE_MEMORY_BYTES, LIBREOFFICE_MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIBREOFFICE_FILE_BYTES, LIBREOFFICE_FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # If the worker dies, `timeout` (this process) is sent TERM, which it passes to all of
    # LibreOffice's processes, then KILL: nothing of the conversion outlives the worker.
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def office_to_pdf(data: bytes, *, suffix: str) -> bytes:
    """Convert a word processor (or HTML) document to PDF with LibreOffice headless.

    Each conversion has its own LibreOffice profile in a temporary folder (so conversions
    can run side by side; its settings block every link out) and its own process group,
    which is killed after CONVERSION_TIMEOUT_SECONDS and in any case once the conversion
    ends, so no stray LibreOffice outlives it. LibreOffice runs with no network, limited
    memory and file sizes, under `timeout`, and dies with the worker. Raises
    ConversionFailed with the reason.
    """
    timeout = float(settings.CONVERSION_TIMEOUT_SECONDS)
    with tempfile.TemporaryDirectory(prefix="convert-") as work_dir:
        work = Path(work_dir)
        source = work / f"document{suffix}"
        source.write_bytes(data)
        profile = work / "profile"
        (profile / "user").mkdir(parents=True)
        (profile / "user" / "registrymodifications.xcu").write_text(_PROFILE_SETTINGS)
        command = [
            "timeout",
            "--kill-after",
            f"{_KILL_AFTER_SECONDS}s",
            f"{timeout + _KILL_AFTER_SECONDS:g}s",
            *network_isolation(),
            str(settings.LIBREOFFICE_PATH),
            "--headless",
            "--norestore",
            "--nologo",
            "--nodefault",
            "--nolockcheck",
            "--nofirststartwizard",
            f"-env:UserInstallation={profile.as_uri()}",
            "--convert-to",
            "pdf",
            "--outdir",
            str(work / "out"),
            str(source),
        ]
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(work),
            "LANG": "C.UTF-8",
            "SAL_USE_VCLPLUGIN": "svp",
        }
        try:
            process = subprocess.Popen(
                command,
                cwd=work,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as one
                preexec_fn=_contain,  # noqa: PLW1509 -- only setrlimit and prctl, no locks
            )
        except OSError as error:
            logger.error("LibreOffice cannot be started (%s): %s", settings.LIBREOFFICE_PATH, error)
            raise ConversionFailed(
                f"The document converter is not available on this server. {DOWNLOAD_ADVICE}"
            ) from error
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as error:
            _kill_group(process)
            process.communicate()
            raise ConversionFailed(
                f"Converting this document took longer than {timeout:g} seconds and was "
                f"stopped. {DOWNLOAD_ADVICE}"
            ) from error
        finally:
            # Also on success, and when the task's time limit interrupts us: nothing of it
            # may linger.
            _kill_group(process)
            if process.poll() is None:
                process.wait()
        pdf = work / "out" / "document.pdf"
        if process.returncode != 0 or not pdf.is_file() or pdf.stat().st_size == 0:
            logger.warning(
                "LibreOffice could not convert a %s document (exit %s): %s",
                suffix,
                process.returncode,
                output.decode(errors="replace")[-500:],
            )
            raise ConversionFailed(
                "This document could not be converted: the file may be damaged or not the "
                f"format it claims. {DOWNLOAD_ADVICE}"
            )
        return pdf.read_bytes()


def word_processor_pdf(data: bytes, *, content_type: str) -> bytes:
    """Convert a DOCX, DOC, RTF or ODT document to PDF, if its bytes are that format."""
    suffix = _OFFICE_SUFFIXES[base_content_type(content_type)]
    magic, name = _OFFICE_MAGIC[suffix]
    if not data.lstrip(b"\xef\xbb\xbf\r\n\t ").startswith(magic):
        raise ConversionFailed(
            f"This file is not {name}, though the practice says it is. {DOWNLOAD_ADVICE}"
        )
    return office_to_pdf(data, suffix=suffix)


def document_text(data: bytes) -> str:
    """Return the bytes as text: UTF-8 (with or without a BOM), else Windows-1252."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def sanitised_html(data: bytes) -> bytes:
    """Return the HTML with everything that could run or fetch removed, as a whole page."""
    body = nh3.clean(
        document_text(data),
        tags=_HTML_TAGS,
        clean_content_tags={"script", "style", "template", "noscript", "title"},
        strip_comments=True,
        url_schemes=set(),
    )
    return _HTML_PAGE.format(body=body).encode()


def convert(data: bytes, *, kind: str, content_type: str) -> list[bytes]:
    """Return the preview's parts: PNG pages, or one PDF, HTML or text part."""
    if kind == "pages":
        return image_pages(data)
    if kind == "pdf":
        return [word_processor_pdf(data, content_type=content_type)]
    if kind == "html":
        return [sanitised_html(data)]
    if kind == "text":
        return [document_text(data).encode()]
    raise ValueError(f"unknown conversion {kind!r}")


def fetch_document(
    *, user: UserLike, service_root: str, asid: str, practice_ods: str, url: str
) -> tuple[bytes, str]:
    """Fetch a document's bytes as `user` (at most the size limit); return them and the trace ID.

    Raises ConversionFailed when the practice cannot send it, with the reason.
    """
    endpoint = ProviderEndpoint(
        service_root=service_root,
        asid=asid,
        ods_code=practice_ods,
        capability=Interactions.DOCUMENTS_BINARY.capability,
    )
    limit = max_document_bytes()
    trace_id = ""
    body = bytearray()
    try:
        with _client(user, endpoint).open_binary(url) as download:
            trace_id = download.trace_id
            for chunk in download:
                body += chunk
                if len(body) > limit:
                    raise ConversionFailed(
                        f"The document is over the {settings.GPCONNECT_MAX_DOCUMENT_MB} MB limit."
                    )
    except GPConnectError as error:
        raise ConversionFailed(
            f"The GP practice's system did not send the document: {error.message}",
            trace_id=error.trace_id or trace_id,
        ) from error
    except BinaryDecodeError as error:
        raise ConversionFailed(
            "The GP practice's system sent a reply that was not a document."
        ) from error
    return bytes(body), trace_id


# Asking for a preview ---------------------------------------------------------------------


@dataclass(frozen=True)
class ConversionStatus:
    """What the document page shows of a conversion."""

    title: str
    kind: str
    state: str
    progress: int
    pages: int
    failure: str
    trace_id: str = ""
    can_download: bool = True

    @property
    def pending(self) -> bool:
        return self.state in CONVERSION_PENDING

    @property
    def reason(self) -> str:
        """The failure, without advice to download for someone whose role may not."""
        return self.failure if self.can_download else without_download_advice(self.failure)


def _status(row: ConvertedDocument, title: str, user: UserLike) -> ConversionStatus:
    return ConversionStatus(
        title,
        row.kind,
        row.state,
        row.progress,
        row.pages,
        row.failure,
        trace_id=row.trace_id,
        can_download=roles.can(user, "download"),
    )


def conversion_start(
    *, user: UserLike, context_id: str, document_id: str, session: SessionBase
) -> ConversionStatus:
    """Return the preview conversion of this document, queueing it if there is none yet.

    Raises Http404 for a document outside this user's patient context (audited there), one
    that is not converted for preview, a placeholder or one over the size limit.
    """
    context, document = _document_of(
        user=user, context_id=context_id, document_id=document_id, session=session
    )
    content_type = base_content_type(document.content_type)
    kind = conversion_kind(content_type)
    too_large = document.size is not None and document.size > max_document_bytes()
    if not kind or document.url is None or too_large or not isinstance(user, User):
        raise Http404("This document has no server-made preview")
    key = document_key(context.id, document.id)
    title = document.title or "the document"
    now = timezone.now()
    row = ConvertedDocument.objects.filter(
        user=user, context_id=context.id, document_key=key
    ).first()
    if row is not None and row.expires_at > now:
        return _status(row, title, user)
    if row is not None:
        purge(ConvertedDocument.objects.filter(pk=row.pk))
    try:
        with transaction.atomic():
            row = ConvertedDocument.objects.create(
                user=user,
                session_key=session.session_key or "",
                context_id=context.id,
                document_key=key,
                document_id=document.id[:500],
                nhs_number=context.nhs_number,
                practice_ods=context.practice_ods,
                service_root=context.service_root,
                asid=context.asid,
                url=document.url,
                content_type=content_type,
                is_letter=_is_letter(document),
                kind=kind,
                expires_at=now + cache_ttl(),
            )
    except IntegrityError:
        # Another request made it a moment ago: one conversion per document.
        row = ConvertedDocument.objects.get(user=user, context_id=context.id, document_key=key)
        return _status(row, title, user)
    _enqueue(row.pk)
    return _status(row, title, user)


def conversion_retry(
    *, user: UserLike, context_id: str, document_id: str, session: SessionBase
) -> ConversionStatus:
    """Start this document's preview again if it failed ("Try again"); return its status.

    The failed conversion is replaced; one that is running or ready is left as it is.
    """
    if isinstance(user, User):
        purge(
            ConvertedDocument.objects.filter(
                user=user,
                session_key=session.session_key or "",
                context_id=context_id,
                document_key=document_id,
                state=ConversionState.FAILED,
            )
        )
    return conversion_start(
        user=user, context_id=context_id, document_id=document_id, session=session
    )


def _enqueue(conversion_id: int) -> None:
    from viewer import tasks  # tasks import services: import here, not at the top

    transaction.on_commit(lambda: tasks.convert_document.delay(conversion_id))


@dataclass(frozen=True)
class ConvertedPart:
    """One part of a ready preview, open for reading."""

    content_type: str
    chunks: encrypted_blobs.Plaintext


def _associated_data(row: ConvertedDocument, part: int) -> bytes:
    # Binds each blob to its row and place: a blob renamed or swapped does not decrypt.
    return (
        f"viewer-conversion:{row.pk}:{row.user_id}:{row.context_id}:{row.document_key}:{part}"
    ).encode()


def converted_part(
    *, user: UserLike, context_id: str, document_id: str, session: SessionBase, part: int
) -> ConvertedPart:
    """Return one part (a page, or the whole PDF, HTML or text) of this user's ready preview.

    Only this user's row from this session, unexpired, and only while their role may view
    (a letters-only role only letters). Anything else is a 404. Audited as a view.
    """
    if not isinstance(user, User) or not roles.can(user, "view"):
        raise Http404("No such preview")
    row = ConvertedDocument.objects.filter(
        user=user,
        context_id=context_id,
        document_key=document_id,
        session_key=session.session_key or "",
        state=ConversionState.READY,
        expires_at__gt=timezone.now(),
    ).first()
    if row is None or not 1 <= part <= len(row.blob_names):
        raise Http404("No such preview")
    if roles.letters_only(user) and not row.is_letter:
        raise Http404("No such preview")
    try:
        chunks = encrypted_blobs.read(
            row.blob_names[part - 1], associated_data=_associated_data(row, part)
        )
    except encrypted_blobs.BlobUnreadable as error:
        logger.warning("Converted preview %s is unreadable; purged", row.pk)
        purge(ConvertedDocument.objects.filter(pk=row.pk))
        raise Http404("The preview is no longer available") from error
    audit.record(
        user=user,
        action="view",
        outcome="success",
        nhs_number=row.nhs_number,
        context_id=row.context_id,
        document_id=row.document_id,
        trace_id=row.trace_id,
        detail=f"preview: part {part} of {len(row.blob_names)} ({row.kind}) from the encrypted cache",
    )
    return ConvertedPart(row.output_type, chunks)


# The task's body --------------------------------------------------------------------------


def _note(row: ConvertedDocument, outcome: str, detail: str, trace_id: str = "") -> None:
    audit.record(
        user=row.user,
        action="view",
        outcome=outcome,
        nhs_number=row.nhs_number,
        context_id=row.context_id,
        document_id=row.document_id,
        trace_id=trace_id,
        detail=detail,
    )


def _fail(row: ConvertedDocument, message: str, trace_id: str = "") -> str:
    # One transaction: whoever sees the conversion fail also sees why in the audit trail.
    with transaction.atomic():
        ConvertedDocument.objects.filter(pk=row.pk).update(
            state=ConversionState.FAILED,
            failure=message[:300],
            trace_id=trace_id[:64],
            progress=0,
            updated_at=timezone.now(),
        )
        _note(row, "failure", f"preview conversion ({row.kind}): {message}", trace_id)
    return "failed"


def run_conversion(conversion_id: int) -> str:
    """Convert one queued document into encrypted preview blobs; return what happened.

    Every outcome is final and audited: a document that cannot be converted says why.
    """
    # Every update says when it was made (update() skips auto_now): the sweep for stuck
    # conversions measures from the last sign of life, not from when the row was queued.
    claimed = ConvertedDocument.objects.filter(
        pk=conversion_id, state=ConversionState.QUEUED, expires_at__gt=timezone.now()
    ).update(state=ConversionState.CONVERTING, progress=10, updated_at=timezone.now())
    if not claimed:
        return "skipped"  # purged, expired, or another worker has it
    row = ConvertedDocument.objects.select_related("user").get(pk=conversion_id)
    if not roles.can(row.user, "view"):
        return _fail(row, "The user's role no longer allows viewing documents.")
    trace_id = ""
    names: list[str] = []
    try:
        data, trace_id = fetch_document(
            user=row.user,
            service_root=row.service_root,
            asid=row.asid,
            practice_ods=row.practice_ods,
            url=row.url,
        )
        ConvertedDocument.objects.filter(pk=row.pk).update(
            progress=40, trace_id=trace_id[:64], updated_at=timezone.now()
        )
        parts = convert(data, kind=row.kind, content_type=row.content_type)
        ConvertedDocument.objects.filter(pk=row.pk).update(progress=80, updated_at=timezone.now())
        for number, part in enumerate(parts, start=1):
            name, _ = encrypted_blobs.write(
                f"conversions/{secrets.token_hex(16)}.bin",
                [part],
                associated_data=_associated_data(row, number),
            )
            names.append(name)
    except ConversionFailed as error:
        encrypted_blobs.delete_all(names)
        return _fail(row, error.message, error.trace_id or trace_id)
    except SoftTimeLimitExceeded:
        # The task's time is up: say so, then let Celery see it.
        encrypted_blobs.delete_all(names)
        _fail(row, TOOK_TOO_LONG, trace_id)
        raise
    except Exception:
        # Anything else (a storage or key problem) must not leave the row "converting".
        encrypted_blobs.delete_all(names)
        logger.exception("Conversion %s failed unexpectedly; trace ID %s", row.pk, trace_id)
        return _fail(row, "The preview could not be made (an unexpected error).", trace_id)

    with transaction.atomic():
        finished = ConvertedDocument.objects.filter(
            pk=row.pk, state=ConversionState.CONVERTING
        ).update(
            state=ConversionState.READY,
            progress=100,
            pages=len(names),
            blob_names=names,
            output_type=_OUTPUT_TYPES[row.kind],
            expires_at=timezone.now() + cache_ttl(),
            updated_at=timezone.now(),
        )
        if finished:
            _note(
                row,
                "success",
                f"preview conversion: {row.content_type} to {row.kind} ({len(names)} part(s)), "
                "stored encrypted",
                trace_id,
            )
    if not finished:
        encrypted_blobs.delete_all(
            names
        )  # purged while it was converting: the blobs must not outlive it
        return "purged"
    return "ready"


# Purging ----------------------------------------------------------------------------------


def purge(rows: QuerySet[ConvertedDocument]) -> int:
    """Delete the rows and their blobs; return how many rows went."""
    doomed = list(rows.values_list("pk", "blob_names"))
    if not doomed:
        return 0
    ConvertedDocument.objects.filter(pk__in=[pk for pk, _ in doomed]).delete()
    for _, names in doomed:
        encrypted_blobs.delete_all(names or [])
    return len(doomed)


def purge_session(session_key: str | None) -> int:
    """Purge every preview made in this session (sign-out)."""
    if not session_key:
        return 0
    return purge(ConvertedDocument.objects.filter(session_key=session_key))


def conversion_time_limit() -> int:
    """Return the seconds a conversion task may run before it is asked to stop.

    Fetching the document (the GP Connect read time-out), converting it
    (CONVERSION_TIMEOUT_SECONDS) and storing it, with room to spare.
    """
    return int(settings.CONVERSION_TIMEOUT_SECONDS) + int(settings.GPCONNECT_READ_TIMEOUT) + 30


# Seconds between a task's soft limit (it is asked to stop) and its hard one (it is killed).
HARD_LIMIT_GRACE = 30


def stuck_before(now: datetime, soft_limit: int) -> datetime:
    """A task still running with no sign of life since this was killed with its worker."""
    return now - timedelta(seconds=soft_limit + HARD_LIMIT_GRACE + 60)


# A queued task no worker has started in this time is lost (or the workers are down):
# the page says so and offers to try again, rather than waiting for ever.
QUEUE_PATIENCE = timedelta(minutes=10)

TOOK_TOO_LONG = f"Preparing the preview took too long and was stopped. {RETRY_OR_DOWNLOAD}"
STOPPED = f"The preview stopped part way (the worker was lost). {RETRY_OR_DOWNLOAD}"
NEVER_STARTED = "The preview never started: the server is busy or its workers are down. Try again."


def purge_stale(now: datetime | None = None) -> int:
    """Fail lost conversions, and purge expired ones and those whose session has ended.

    Beat runs this. A conversion is lost when it has run past its hard time limit since
    its last update, or waited in the queue past QUEUE_PATIENCE; each is audited.
    """
    now = now or timezone.now()
    lost = [
        (ConversionState.CONVERTING, stuck_before(now, conversion_time_limit()), STOPPED),
        (ConversionState.QUEUED, now - QUEUE_PATIENCE, NEVER_STARTED),
    ]
    for state, before, message in lost:
        rows = ConvertedDocument.objects.select_related("user")
        for row in rows.filter(state=state, updated_at__lt=before):
            with transaction.atomic():
                if ConvertedDocument.objects.filter(
                    pk=row.pk, state=state, updated_at__lt=before
                ).update(state=ConversionState.FAILED, failure=message, updated_at=now):
                    _note(row, "failure", f"preview conversion ({row.kind}): {message}")
    gone = purge(ConvertedDocument.objects.filter(expires_at__lte=now))
    sessions = set(ConvertedDocument.objects.values_list("session_key", flat=True).distinct())
    ended = [key for key in sessions if not session_alive(key)]
    if ended:
        gone += purge(ConvertedDocument.objects.filter(session_key__in=ended))
    return gone
