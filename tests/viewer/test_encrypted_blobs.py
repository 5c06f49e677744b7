"""Encrypted blobs: what goes in comes out, only with the right row's associated data."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from viewer import encrypted_blobs


@pytest.fixture
def folder(settings: Any, tmp_path: Path) -> Path:
    settings.STORAGES = {
        **settings.STORAGES,
        "prefetch": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    return tmp_path


def chunks_of(data: bytes, size: int = 100_000) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_a_blob_reads_back_byte_for_byte_across_many_segments(folder: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    seen: list[int] = []

    name, size = encrypted_blobs.write(
        "t/a.bin", chunks_of(data), associated_data=b"row 1", progress=seen.append
    )

    assert size == len(data) and seen[-1] == len(data)
    assert b"".join(encrypted_blobs.read(name, associated_data=b"row 1")) == data


def test_an_empty_document_round_trips(folder: Path) -> None:
    name, size = encrypted_blobs.write("t/empty.bin", [], associated_data=b"row")
    assert size == 0
    assert b"".join(encrypted_blobs.read(name, associated_data=b"row")) == b""


def test_a_blob_does_not_open_for_another_row(folder: Path) -> None:
    name, _ = encrypted_blobs.write("t/b.bin", [b"secret letter"], associated_data=b"row 1")

    with pytest.raises(encrypted_blobs.BlobUnreadable):
        encrypted_blobs.read(name, associated_data=b"row 2")


def test_a_truncated_blob_fails_instead_of_giving_a_short_document(folder: Path) -> None:
    data = os.urandom(2 * 1024 * 1024 + 5)
    name, _ = encrypted_blobs.write("t/c.bin", chunks_of(data), associated_data=b"row")
    path = folder / name
    path.write_bytes(path.read_bytes()[: 1024 * 1024 + 4096])

    with pytest.raises(encrypted_blobs.BlobUnreadable):
        b"".join(encrypted_blobs.read(name, associated_data=b"row"))


def test_a_missing_blob_is_unreadable_and_deleting_it_again_is_harmless(folder: Path) -> None:
    name, _ = encrypted_blobs.write("t/d.bin", [b"x"], associated_data=b"row")
    encrypted_blobs.delete(name)
    encrypted_blobs.delete(name)

    with pytest.raises(encrypted_blobs.BlobUnreadable):
        encrypted_blobs.read(name, associated_data=b"row")
