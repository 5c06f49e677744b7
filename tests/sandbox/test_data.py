"""The sandbox's synthetic record and its files: what a tester browsing each scenario will see.

One generation (without the stress files) is shared by the read-only tests; tests that change
the data directory work on a copy of it.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tracemalloc
import uuid
import wave
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import docx
import pytest
from PIL import Image

from gpconnect.sandbox import data, files
from gpconnect.sandbox.catalogue import PATIENTS, PATIENTS_BY_SCENARIO, PRACTICES
from gpconnect.sandbox.records import DocumentRecord, SandboxRecord

TODAY = date(2025, 6, 1)
FIVE_MB = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SandboxRecord]:
    data_dir = tmp_path_factory.mktemp("sandbox-data")
    return data_dir, data.generate(data_dir, today=TODAY, include_stress=False)


@pytest.fixture(scope="module")
def record(generated: tuple[Path, SandboxRecord]) -> SandboxRecord:
    return generated[1]


@pytest.fixture
def data_copy(generated: tuple[Path, SandboxRecord], tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(generated[0], copy)
    return copy


def documents_of(record: SandboxRecord, scenario: str) -> list[DocumentRecord]:
    nhs = PATIENTS_BY_SCENARIO[scenario].nhs_number
    return [d for d in record.documents if d.patient_nhs == nhs]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def all_file_hashes(data_dir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(data_dir)): sha256_of(p)
        for p in sorted((data_dir / "documents").rglob("*"))
        if p.is_file()
    }


def parse_fhir(value: str) -> datetime:
    return datetime.fromisoformat(value)


def pdf_page_count(content: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page\b", content))


def assert_pdf_cross_references_point_at_objects(content: bytes) -> None:
    start = int(re.findall(rb"startxref\s+(\d+)", content)[-1])
    assert content[start : start + 4] == b"xref"
    count = int(re.match(rb"xref\s+0\s+(\d+)", content[start:]).group(1))  # type: ignore[union-attr]
    table = content[start:].split(b"\n", 2)[2]
    for number in range(1, count):
        offset = int(table[number * 20 : number * 20 + 10])
        assert content[offset:].startswith(b"%d 0 obj" % number), number


# --------------------------------------------------------------------------- determinism


def test_generating_twice_on_the_same_day_gives_the_same_manifest_and_the_same_files(
    generated: tuple[Path, SandboxRecord], tmp_path: Path
) -> None:
    first_dir, first = generated
    second = data.generate(tmp_path, today=TODAY, include_stress=False)

    assert second == first
    assert (tmp_path / "manifest.json").read_bytes() == (first_dir / "manifest.json").read_bytes()
    assert all_file_hashes(tmp_path) == all_file_hashes(first_dir)


def test_the_manifest_records_the_generator_version_and_the_date(
    generated: tuple[Path, SandboxRecord],
) -> None:
    manifest = json.loads((generated[0] / "manifest.json").read_text())
    assert manifest["version"] == data.GENERATOR_VERSION
    assert manifest["generated_on"] == TODAY.isoformat()
    assert manifest["include_stress"] is False


def test_the_record_survives_a_round_trip_through_json(record: SandboxRecord) -> None:
    as_json = json.loads(json.dumps(data.record_to_json(record)))
    assert data.record_from_json(as_json) == record


# --------------------------------------------------------------------------- every document


def test_document_ids_are_opaque_unique_and_safe_in_a_url(record: SandboxRecord) -> None:
    ids = [d.id for d in record.documents]
    assert len(ids) == len(set(ids))
    for doc_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9\-\.]{1,64}", doc_id), doc_id


def test_document_identifiers_are_distinct_uuids(record: SandboxRecord) -> None:
    identifiers = [d.identifier for d in record.documents]
    assert len(set(identifiers)) == len(identifiers)
    for value in identifiers:
        assert str(uuid.UUID(value)) == value


def test_every_document_belongs_to_its_patients_practice(record: SandboxRecord) -> None:
    patients = {p.nhs_number: p for p in PATIENTS}
    for d in record.documents:
        assert d.practice_ods == patients[d.patient_nhs].practice_ods


def test_every_author_is_a_known_organisation_or_practitioner(record: SandboxRecord) -> None:
    organisations = {o.ods for o in record.organisations}
    practitioners = {p.id: p for p in record.practitioners}
    for d in record.documents:
        assert d.author_org_ods is None or d.author_org_ods in organisations
        if d.author_practitioner_id is not None:
            assert practitioners[d.author_practitioner_id].organisation_ods == d.author_org_ods


def test_every_retrievable_document_file_exists_with_the_listed_size_and_hash(
    generated: tuple[Path, SandboxRecord],
) -> None:
    data_dir, record = generated
    retrievable = [d for d in record.documents if d.file is not None]
    assert len(retrievable) > 1500
    for d in retrievable:
        path = data_dir / d.file  # type: ignore[operator]
        assert path.is_file(), d.id
        assert path.stat().st_size == d.size, d.id
        assert sha256_of(path) == d.sha256, d.id


def _check_pdf(content: bytes) -> None:
    assert content.startswith(b"%PDF-")
    assert content.rstrip().endswith(b"%%EOF")
    assert pdf_page_count(content) >= 1
    assert_pdf_cross_references_point_at_objects(content)


def _check_image(fmt: str, frames: int = 1) -> Callable[[bytes], None]:
    def check(content: bytes) -> None:
        with Image.open(io.BytesIO(content)) as image:
            assert image.format == fmt
            image.load()
            assert getattr(image, "n_frames", 1) == frames

    return check


def _check_tiff(content: bytes) -> None:
    _check_image("TIFF", frames=3)(content)
    with Image.open(io.BytesIO(content)) as image:
        assert image.mode == "L"  # grey-scale, like a scanner's output


def _check_docx(content: bytes) -> None:
    document = docx.Document(io.BytesIO(content))
    assert document.paragraphs and document.tables
    assert any(
        p.style is not None and p.style.name.startswith("Heading") for p in document.paragraphs
    )


def _check_rtf(content: bytes) -> None:
    text = content.decode("ascii")
    assert text.startswith("{\\rtf1\\ansi")
    assert "\\fonttbl" in text and "\\b " in text
    unescaped = text.replace("\\\\", "").replace("\\{", "").replace("\\}", "")
    assert unescaped.count("{") == unescaped.count("}")


def _check_html(content: bytes) -> None:
    text = content.decode("utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "<table" in text
    assert (
        "<script>" in text and "onclick=" in text
    )  # realistic-risky: the viewer must not run them


def _check_text(content: bytes) -> None:
    text = content.decode("utf-8")
    assert files.SYNTHETIC_NOTICE in text


def _check_xml(content: bytes) -> None:
    root = ET.fromstring(content)
    assert root.tag.endswith("PathologyReport")
    assert root.find(".//{*}Result") is not None


def _check_wav(content: bytes) -> None:
    with wave.open(io.BytesIO(content)) as audio:
        assert audio.getnchannels() == 1
        assert audio.getnframes() > 0


def _check_au(content: bytes) -> None:
    assert content[:4] == b".snd"
    offset, length = int.from_bytes(content[4:8], "big"), int.from_bytes(content[8:12], "big")
    assert offset + length == len(content)


def _check_octet_stream(content: bytes) -> None:
    assert len(set(content)) > 200  # opaque bytes, not text


CHECKS: dict[str, Callable[[bytes], None]] = {
    "application/pdf": _check_pdf,
    "image/tiff": _check_tiff,
    "image/jpeg": _check_image("JPEG"),
    "image/png": _check_image("PNG"),
    "image/bmp": _check_image("BMP"),
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": _check_docx,
    "application/rtf": _check_rtf,
    "text/html": _check_html,
    "text/plain": _check_text,
    "application/xml": _check_xml,
    "audio/wav": _check_wav,
    "audio/x-au": _check_au,
    "application/octet-stream": _check_octet_stream,
}


def test_every_file_really_is_of_its_content_type(generated: tuple[Path, SandboxRecord]) -> None:
    data_dir, record = generated
    checked: set[str] = set()
    for d in record.documents:
        if d.file is None or d.file in checked:
            continue
        checked.add(d.file)
        CHECKS[d.content_type]((data_dir / d.file).read_bytes())


def test_pdf_letters_vary_from_one_page_to_six(generated: tuple[Path, SandboxRecord]) -> None:
    data_dir, record = generated
    pages = {
        pdf_page_count((data_dir / d.file).read_bytes())
        for d in documents_of(record, "documents")
        if d.file and d.content_type == "application/pdf"
    }
    assert {1, 2, 3, 4, 5, 6} <= pages


def test_letters_carry_the_patients_details_and_say_they_are_synthetic(
    generated: tuple[Path, SandboxRecord],
) -> None:
    data_dir, record = generated
    patient = PATIENTS_BY_SCENARIO["documents"]
    for d in documents_of(record, "documents"):
        if d.content_type in {"text/plain", "text/html", "application/rtf"}:
            text = (data_dir / d.file).read_text()  # type: ignore[operator]
            assert patient.family in text
            assert "999 000 0018" in text
            assert files.SYNTHETIC_NOTICE in text


def test_the_biggest_ordinary_document_is_just_under_the_5_mb_limit(record: SandboxRecord) -> None:
    biggest = max((d for d in record.documents if d.file is not None), key=lambda d: d.size)
    assert biggest.content_type == "application/pdf"
    assert 4_600_000 <= biggest.size < 4_900_000 < FIVE_MB


def test_indexed_is_never_before_created_nor_in_the_future(record: SandboxRecord) -> None:
    end_of_today = datetime.fromisoformat(f"{TODAY.isoformat()}T23:59:59+00:00")
    for d in record.documents:
        indexed = parse_fhir(d.indexed)
        assert indexed <= end_of_today
        if d.created is not None:
            assert parse_fhir(d.created) <= indexed


def test_document_dates_spread_over_the_last_ten_years(record: SandboxRecord) -> None:
    for scenario in ("documents", "many-documents"):
        created = [
            parse_fhir(d.created).date() for d in documents_of(record, scenario) if d.created
        ]
        assert TODAY - min(created) > timedelta(days=9 * 365)
        assert TODAY - min(created) <= timedelta(days=3660)
        assert TODAY - max(created) < timedelta(days=60)
        assert len({c.year for c in created}) >= 10


# --------------------------------------------------------------------------- the scenarios


def test_the_documents_scenario_has_about_forty_documents_of_every_kind(
    record: SandboxRecord,
) -> None:
    docs = documents_of(record, "documents")
    assert 38 <= len(docs) <= 45
    assert {d.content_type for d in docs} == set(CHECKS)
    assert all(d.file is not None for d in docs)


def test_the_documents_scenario_mixes_coded_and_text_only_types(record: SandboxRecord) -> None:
    docs = documents_of(record, "documents")
    coded = {(d.type_code, d.type_display) for d in docs if d.type_code}
    assert 6 <= len(coded) <= 10
    assert all(code and code.isdigit() and display for code, display in coded)
    text_only = [d for d in docs if d.type_code is None]
    assert text_only and all(d.type_text and d.type_display is None for d in text_only)
    assert {"Letter", "Scanned document", "Photograph"} <= {d.type_text for d in text_only}


def test_the_documents_scenario_has_internal_and_external_authors(record: SandboxRecord) -> None:
    docs = documents_of(record, "documents")
    practice = PATIENTS_BY_SCENARIO["documents"].practice_ods
    authors = {d.author_org_ods for d in docs}
    assert practice in authors
    assert {"RR8", "RCD", "RXF", "NDD01", "NDD02"} <= authors
    assert len({d.author_practitioner_id for d in docs if d.author_practitioner_id}) >= 6
    assert any(d.author_practitioner_id is None and d.author_org_ods for d in docs)


def test_the_documents_scenario_has_the_quirks_real_providers_send(record: SandboxRecord) -> None:
    docs = documents_of(record, "documents")
    titles = {d.title for d in docs}
    assert {"meta", "label"} <= {d.nopat for d in docs}
    assert sum(d.listed_twice for d in docs) == 1
    assert [d for d in record.documents if d.listed_twice] == [d for d in docs if d.listed_twice]
    assert sum(d.created is None for d in docs) >= 2
    assert sum(d.title is None for d in docs) == 1
    assert "!@£$%^&*()_==-][}[ Document Title" in titles
    assert "Résumé — clinic letter" in titles
    assert any(t and "../../etc/passwd" in t for t in titles)
    assert any(t and "<b>bold</b>" in t for t in titles)
    assert sum(d.encounter_id is not None for d in docs) >= 3
    assert all(d.unavailable_reason is None and d.fault is None for d in docs)


def test_placeholders_are_listed_without_a_file_with_their_reason_and_size(
    record: SandboxRecord,
) -> None:
    docs = documents_of(record, "placeholders")
    too_large = [d for d in docs if d.file is None and d.size > FIVE_MB]
    assert 4 <= len(too_large) <= 6
    for d in too_large:
        assert d.sha256 is None
        assert (
            d.unavailable_reason == f"File size {d.size} bytes greater than maximum allowable (5MB)"
        )
    other = [d for d in docs if d.file is None and d.size <= FIVE_MB]
    assert [d.unavailable_reason for d in other] == [
        "Document is being scanned and is not yet available"
    ]
    retrievable = [d for d in docs if d.file is not None]
    assert len(retrievable) == 2
    assert all(d.size < FIVE_MB and d.unavailable_reason is None for d in retrievable)
    assert len({d.content_type for d in too_large}) >= 4


def test_the_many_documents_patient_has_1500_varied_documents(record: SandboxRecord) -> None:
    docs = documents_of(record, "many-documents")
    assert len(docs) == 1500
    assert len({d.type_code or d.type_text for d in docs}) >= 10
    assert len({d.author_org_ods for d in docs}) >= 5
    assert len({d.title for d in docs}) >= 30
    assert len({d.content_type for d in docs}) >= 4
    assert {"meta", "label"} <= {d.nopat for d in docs}
    assert any(d.created is None for d in docs)
    assert len({d.file for d in docs}) <= 10  # a handful of shared files keeps generation fast


@pytest.mark.parametrize(
    "scenario", ["no-documents", "sensitive", "not-registered", "deceased-expired", "stress"]
)
def test_patients_the_provider_refuses_or_who_have_none_have_no_documents(
    record: SandboxRecord, scenario: str
) -> None:
    assert documents_of(record, scenario) == []


@pytest.mark.parametrize(
    ("scenario", "count"),
    [("deceased-recent", 5), ("no-consent", 3), ("slow", 5), ("faulty", 6), ("structured", 8)],
)
def test_smaller_scenarios_have_the_promised_number_of_documents(
    record: SandboxRecord, scenario: str, count: int
) -> None:
    docs = documents_of(record, scenario)
    assert len(docs) == count
    assert all(d.file is not None for d in docs)


def test_the_deceased_patients_documents_predate_the_notification_of_death(
    record: SandboxRecord,
) -> None:
    died = PATIENTS_BY_SCENARIO["deceased-recent"].deceased_on(TODAY)
    assert died is not None
    created = sorted(
        parse_fhir(d.created).date() for d in documents_of(record, "deceased-recent") if d.created
    )
    assert created[-1] > died > created[-2]


def test_the_faulty_patient_has_one_document_with_each_fault_and_normal_ones(
    record: SandboxRecord,
) -> None:
    faults = Counter(d.fault for d in documents_of(record, "faulty"))
    assert faults == {
        None: 2,
        "stops-half-way": 1,
        "invalid-base64": 1,
        "non-json": 1,
        "slow-drip": 1,
    }


def test_structured_consultations_and_problems_link_the_patients_documents(
    record: SandboxRecord,
) -> None:
    nhs = PATIENTS_BY_SCENARIO["structured"].nhs_number
    docs = {d.id: d for d in documents_of(record, "structured")}
    consultations = [c for c in record.consultations if c.patient_nhs == nhs]
    problems = [p for p in record.problems if p.patient_nhs == nhs]
    assert len(consultations) == 4 and len(problems) == 3

    dates = sorted(parse_fhir(c.date).date() for c in consultations)
    assert TODAY - dates[0] <= timedelta(days=2 * 365) and dates[-1] < TODAY
    assert all(1 <= len(c.topics) <= 3 for c in consultations)
    assert sum(len(c.topics) == 1 for c in consultations) >= 1
    from_consultations = set()
    for c in consultations:
        for _title, ids in c.topics:
            for doc_id in ids:
                assert docs[doc_id].encounter_id == c.id
                from_consultations.add(doc_id)
    from_problems = {i for p in problems for i in p.related_document_ids}
    actual = [p.actual_problem_document_id for p in problems if p.actual_problem_document_id]
    assert len(actual) == 1 and actual[0] in docs
    from_problems |= set(actual)
    assert from_problems <= set(docs)
    assert len(from_consultations & from_problems) == 1
    assert len(set(docs) - from_consultations - from_problems) == 1
    assert {p.snomed_code for p in problems} == {"44054006", "59621000", "239873007"}
    for d in docs.values():
        assert (d.encounter_id is not None) == (d.id in from_consultations)


def test_each_federated_practice_has_at_least_three_mixed_practitioners(
    record: SandboxRecord,
) -> None:
    for practice in (p for p in PRACTICES if p.federated):
        staff = [p for p in record.practitioners if p.organisation_ods == practice.ods]
        assert len(staff) >= 3, practice.ods
        assert {"male", "female"} <= {p.gender for p in staff}
        assert len({p.role_code for p in staff}) >= 2
        assert all(p.sds_user_id.isdigit() and p.family and p.given for p in staff)
    assert len({p.sds_user_id for p in record.practitioners}) == len(record.practitioners)


def test_every_organisation_has_a_unique_id_and_the_practices_are_among_them(
    record: SandboxRecord,
) -> None:
    ods = [o.ods for o in record.organisations]
    assert len(set(ods)) == len(ods)
    assert {p.ods for p in PRACTICES} <= set(ods)
    by_ods = {o.ods: o for o in record.organisations}
    assert all(by_ods[p.ods].id == p.organisation_id for p in PRACTICES)


# --------------------------------------------------------------------------- load_or_generate


def _mtimes(data_dir: Path) -> dict[str, int]:
    return {
        str(p.relative_to(data_dir)): p.stat().st_mtime_ns
        for p in [data_dir / "manifest.json", *(data_dir / "documents").rglob("*")]
    }


def test_load_or_generate_reuses_an_existing_manifest_without_writing_anything(
    data_copy: Path, record: SandboxRecord
) -> None:
    before = _mtimes(data_copy)
    loaded = data.load_or_generate(data_copy, today=TODAY, include_stress=False)
    assert loaded == record
    assert _mtimes(data_copy) == before


def test_a_manifest_from_another_day_is_made_again_so_dates_stay_relative_to_today(
    data_copy: Path, record: SandboxRecord
) -> None:
    later = data.load_or_generate(data_copy, today=TODAY + timedelta(days=3), include_stress=False)
    assert later != record
    assert (
        json.loads((data_copy / "manifest.json").read_text())["generated_on"]
        == (TODAY + timedelta(days=3)).isoformat()
    )


def test_load_or_generate_generates_into_an_empty_directory(
    tmp_path: Path, record: SandboxRecord
) -> None:
    assert data.load_or_generate(tmp_path / "new", today=TODAY, include_stress=False) == record
    assert (tmp_path / "new" / "manifest.json").is_file()


def test_load_or_generate_regenerates_when_a_file_is_missing(data_copy: Path) -> None:
    missing = data_copy / "documents" / "documents" / "doc-9990000018-001.pdf"
    missing.unlink()
    record = data.load_or_generate(data_copy, today=TODAY, include_stress=False)
    assert missing.is_file()
    assert all((data_copy / d.file).is_file() for d in record.documents if d.file)


def test_load_or_generate_regenerates_when_the_generator_version_changed(data_copy: Path) -> None:
    manifest_path = data_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["version"] = data.GENERATOR_VERSION - 1
    manifest_path.write_text(json.dumps(manifest))
    data.load_or_generate(data_copy, today=TODAY, include_stress=False)
    assert json.loads(manifest_path.read_text())["version"] == data.GENERATOR_VERSION


def test_load_or_generate_regenerates_when_the_manifest_is_corrupt(data_copy: Path) -> None:
    (data_copy / "manifest.json").write_text('{"version": 1, "documents": [')
    data.load_or_generate(data_copy, today=TODAY, include_stress=False)
    assert (
        json.loads((data_copy / "manifest.json").read_text())["version"] == data.GENERATOR_VERSION
    )


def test_generation_leaves_no_temporary_files_behind(generated: tuple[Path, SandboxRecord]) -> None:
    names = {p.name for p in generated[0].iterdir()}
    assert names == {"manifest.json", "documents", ".lock"}


def test_a_crash_mid_generation_leaves_no_manifest_pointing_at_half_written_files(
    data_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: Any, **kwargs: Any) -> bytes:
        raise RuntimeError("disk full")

    manifest_before = (data_copy / "manifest.json").read_bytes()
    monkeypatch.setattr(files, "wav_tone", crash)
    with pytest.raises(RuntimeError):
        data.generate(data_copy, today=TODAY + timedelta(days=1), include_stress=False)
    # The previous generation is untouched and still usable.
    assert (data_copy / "manifest.json").read_bytes() == manifest_before
    assert not list(data_copy.glob(".generating-*"))
    monkeypatch.undo()
    before = _mtimes(data_copy)
    data.load_or_generate(data_copy, today=TODAY, include_stress=False)
    assert _mtimes(data_copy) == before


@pytest.fixture
def small_stress(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(data, "STRESS_SIZES", (64 * 1024, 96 * 1024))
    yield


@pytest.mark.usefixtures("small_stress")
def test_asking_for_stress_documents_after_a_run_without_them_generates_them(
    data_copy: Path,
) -> None:
    record = data.load_or_generate(data_copy, today=TODAY, include_stress=True)
    assert len(documents_of(record, "stress")) == 2
    # ... and a later run without stress reuses that manifest, leaving them out.
    before = _mtimes(data_copy)
    without = data.load_or_generate(data_copy, today=TODAY, include_stress=False)
    assert documents_of(without, "stress") == []
    assert _mtimes(data_copy) == before


def test_a_stress_pdf_is_a_valid_pdf_of_exactly_the_requested_size(tmp_path: Path) -> None:
    for size in (10_000, 99_999, 100_000, 1 << 20):
        path = tmp_path / f"{size}.pdf"
        written, digest = files.write_stress_pdf(path, size, seed="s", chunk=4096)
        content = path.read_bytes()
        assert written == size == len(content)
        assert digest == hashlib.sha256(content).hexdigest()
        _check_pdf(content)


# --------------------------------------------------------------------------- stress (slow-ish)


def test_stress_documents_of_20_and_100_mib_are_generated_without_holding_them_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Takes a couple of seconds: it writes 120 MiB."""
    peaks: list[int] = []
    real = files.write_stress_pdf

    def measured(*args: Any, **kwargs: Any) -> tuple[int, str]:
        tracemalloc.start()
        try:
            return real(*args, **kwargs)
        finally:
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()

    monkeypatch.setattr(files, "write_stress_pdf", measured)
    record = data.generate(tmp_path, today=TODAY, include_stress=True)

    stress = documents_of(record, "stress")
    assert [d.size for d in stress] == [20 * 1024 * 1024, 100 * 1024 * 1024]
    assert len(peaks) == 2 and max(peaks) < 20 * 1024 * 1024
    for d in stress:
        assert d.over_limit and d.file is not None and d.content_type == "application/pdf"
        assert "beyond the 5 MB limit" in (d.title or "")
        path = tmp_path / d.file
        assert path.stat().st_size == d.size
        assert sha256_of(path) == d.sha256
        with path.open("rb") as f:
            assert f.read(5) == b"%PDF-"
    assert not any(d.over_limit for d in record.documents if d not in stress)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["include_stress"] is True


def test_docx_files_open_as_zip_archives_with_fixed_timestamps(
    generated: tuple[Path, SandboxRecord],
) -> None:
    data_dir, record = generated
    docx_doc = next(d for d in record.documents if d.file and d.file.endswith(".docx"))
    with zipfile.ZipFile(data_dir / docx_doc.file) as archive:  # type: ignore[operator]
        assert {info.date_time for info in archive.infolist()} == {archive.infolist()[0].date_time}
