"""Encrypted blobs: documents at rest, only ever as Tink streaming AEAD ciphertext.

Tink's AES256-GCM-HKDF streaming AEAD encrypts and decrypts in 64 KiB segments, each
authenticated, so neither writing nor reading holds a whole document in memory, and a
changed, truncated or swapped blob fails to decrypt instead of yielding wrong bytes.
The associated data binds each blob to the row that names it, so one user's blob
cannot be served as another's even by someone who can rename files in the storage.

The blobs go through a Django storage (`settings.STORAGES["prefetch"]`): the local
filesystem by default, object storage by configuration.
"""

from __future__ import annotations

import io
import logging
import os
import secrets
import tempfile
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import IO

import tink
from django.conf import settings
from django.core.files import File
from django.core.files.storage import Storage, storages
from tink import secret_key_access, streaming_aead
from tink.proto import aes_gcm_hkdf_streaming_pb2, common_pb2, tink_pb2

logger = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
FIRST_READ_SIZE = 64 * 1024
SEGMENT_SIZE = 64 * 1024


def _key_template() -> tink_pb2.KeyTemplate:
    """AES-256-GCM-HKDF streaming with 64 KiB segments.

    Tink's stock templates have 4 KiB segments (decrypting at a third of the speed) or
    1 MiB ones (the whole first MiB decrypted before the first byte: several ms of the
    10 ms a prefetched document has to start). 64 KiB keeps both fast (bench/download_view.py).
    """
    key_format = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingKeyFormat(
        key_size=32,
        params=aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingParams(
            ciphertext_segment_size=SEGMENT_SIZE,
            derived_key_size=32,
            hkdf_hash_type=common_pb2.SHA256,
        ),
    )
    return tink_pb2.KeyTemplate(
        type_url="type.googleapis.com/google.crypto.tink.AesGcmHkdfStreamingKey",
        value=key_format.SerializeToString(),
        output_prefix_type=tink_pb2.RAW,
    )


class BlobUnreadable(Exception):
    """The blob is missing, or it does not decrypt (tampered, truncated, wrong key)."""


def _keyset_json() -> str:
    """Return the configured keyset, or the generated one under VAR_DIR (created once)."""
    if settings.PREFETCH_KEYSET:
        return str(settings.PREFETCH_KEYSET)
    return _generated_keyset(str(settings.PREFETCH_KEYSET_PATH))


@cache
def _generated_keyset(location: str) -> str:
    # Read once per process: every prefetched download asks for the primitive.
    path = Path(location)
    if not path.exists():
        streaming_aead.register()
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = tink.new_keyset_handle(_key_template())
        text = tink.json_proto_keyset_format.serialize(handle, secret_key_access.TOKEN)
        draft = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        # link() never replaces: when two processes race, both use the winner's keyset.
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text()


@cache
def _primitive(keyset: str) -> streaming_aead.StreamingAead:
    streaming_aead.register()
    handle = tink.json_proto_keyset_format.parse(keyset, secret_key_access.TOKEN)
    return handle.primitive(streaming_aead.StreamingAead)


def primitive() -> streaming_aead.StreamingAead:
    return _primitive(_keyset_json())


def storage() -> Storage:
    return storages["prefetch"]


class _Unclosable(io.RawIOBase):
    """Lets Tink's encrypting stream finish without closing the file under it."""

    def __init__(self, target: IO[bytes]) -> None:
        self._target = target

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        return self._target.write(data)


def write(
    name: str,
    chunks: Iterable[bytes],
    *,
    associated_data: bytes,
    progress: Callable[[int], None] | None = None,
) -> tuple[str, int]:
    """Encrypt the chunks into the storage as `name`; return the stored name and byte count.

    The ciphertext is spooled to a temporary file first (never the plaintext), because a
    storage's `save` wants a file it can read from the start.
    """
    written = 0
    with tempfile.TemporaryFile(prefix="blob-", dir=settings.FILE_UPLOAD_TEMP_DIR) as spool:
        with primitive().new_encrypting_stream(_Unclosable(spool), associated_data) as encrypt:
            for chunk in chunks:
                encrypt.write(chunk)
                written += len(chunk)
                if progress is not None:
                    progress(written)
        spool.seek(0)
        stored = storage().save(name, File(spool, name=name))
    return stored, written


def read(name: str, *, associated_data: bytes) -> Plaintext:
    """Open the blob and return its plaintext as a stream of chunks.

    The first chunk is decrypted before this returns, so a missing or undecryptable blob
    raises `BlobUnreadable` here; a failure further on raises it from the iteration.
    """
    try:
        source = storage().open(name, "rb")
    except (FileNotFoundError, OSError) as error:
        raise BlobUnreadable(f"blob {name} cannot be opened: {error}") from error
    try:
        decrypt = primitive().new_decrypting_stream(source, associated_data)
        first = decrypt.read(FIRST_READ_SIZE)
    except (tink.TinkError, OSError) as error:
        source.close()
        raise BlobUnreadable(f"blob {name} does not decrypt: {error}") from error
    return Plaintext(first, decrypt, source, name)


class Plaintext(Iterator[bytes]):
    """The decrypted chunks of one blob; `close()` releases the blob (also when unstarted)."""

    def __init__(self, first: bytes, decrypt: IO[bytes], source: IO[bytes], name: str) -> None:
        self._next: bytes | None = first
        self._decrypt = decrypt
        self._source = source
        self._name = name

    def __next__(self) -> bytes:
        chunk = self._next
        self._next = None
        if chunk is None:
            try:
                chunk = self._decrypt.read(READ_SIZE)
            except (tink.TinkError, OSError) as error:
                self.close()
                raise BlobUnreadable(f"blob {self._name} does not decrypt: {error}") from error
        if not chunk:
            self.close()
            raise StopIteration
        return chunk

    def close(self) -> None:
        self._source.close()


def delete_all(names: Iterable[str]) -> None:
    """Delete each of these blobs, as `delete` does."""
    for name in names:
        delete(name)


def delete(name: str) -> None:
    """Delete the blob; a blob already gone is not an error."""
    if not name:
        return
    try:
        storage().delete(name)
    except FileNotFoundError:
        pass
    except OSError:
        logger.exception("Could not delete encrypted blob %s", name)
