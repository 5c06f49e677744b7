"""The sandbox's document files: synthetic letters, scans, images, audio and stress files.

Every generator is deterministic: the same inputs (the letter, the seed) give the same bytes
on every run and machine, so the sha256 in the manifest is stable. Timestamps that file
formats carry (the PDF creation date, zip entry times in a DOCX) come from the letter's
date, never from the clock. All text is synthetic and marked as such on every page.

    letter = compose_letter("discharge", seed="doc-1", sender=..., recipient=..., ...)
    pdf_bytes(letter)                      # also docx_bytes, rtf_bytes, html_bytes, text_bytes
    scanned_tiff(letter)                   # a 3-page grey-scale "scan"
    write_stress_pdf(path, 100 * MIB, seed="stress-100")  # streamed, never in memory
"""

from __future__ import annotations

import hashlib
import html
import io
import math
import random
import struct
import textwrap
import unicodedata
import wave
import zipfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from xml.etree import ElementTree as ET

import docx
import docx.shared
from fpdf import FPDF
from fpdf.enums import XPos, YPos
from PIL import Image, ImageDraw, ImageFilter, ImageFont

__all__ = [
    "MIB",
    "SYNTHETIC_NOTICE",
    "Letter",
    "PatientDetails",
    "Sender",
    "au_tone",
    "compose_letter",
    "docx_bytes",
    "ecg_png",
    "html_bytes",
    "large_scan_pdf",
    "pathology_xml",
    "pdf_bytes",
    "random_bytes",
    "rtf_bytes",
    "scanned_tiff",
    "skin_photo",
    "text_bytes",
    "wav_tone",
    "write_file",
    "write_stress_pdf",
]

MIB = 1024 * 1024
SYNTHETIC_NOTICE = "SYNTHETIC TEST DATA - not a real patient"


# --------------------------------------------------------------------------- the letter


@dataclass(frozen=True)
class Sender:
    """Who wrote the letter: the letterhead."""

    name: str
    address: tuple[str, ...]
    phone: str
    department: str = ""


@dataclass(frozen=True)
class PatientDetails:
    name: str  # "Mrs Margaret Ann Whitaker"
    nhs_number: str  # ten digits, no spaces
    birth_date: date
    address: tuple[str, ...]

    @property
    def nhs_number_spaced(self) -> str:
        n = self.nhs_number
        return f"{n[:3]} {n[3:6]} {n[6:]}"


@dataclass(frozen=True)
class Letter:
    """The content of a clinical letter, independent of the file format it is written in."""

    sender: Sender
    recipient: tuple[str, ...]  # address block, first line is the addressee
    salutation: str  # "Dear Dr Hughes"
    patient: PatientDetails
    written_on: date
    title: str
    author: str  # signature line: "Dr Priya Raman"
    author_role: str  # "Consultant Cardiologist"
    pages: tuple[tuple[tuple[str, str], ...], ...]  # per page: (heading, paragraph) sections
    table: tuple[tuple[str, ...], ...] = ()  # first row is the header; shown on page 1
    table_title: str = ""

    @property
    def sections(self) -> tuple[tuple[str, str], ...]:
        return tuple(section for page in self.pages for section in page)


# Sentence banks. Everything is invented; drug names and tests are common ones so the text
# reads like a real letter, but no sentence describes a real person.
_BANK: dict[str, tuple[str, ...]] = {
    "presenting": (
        "{they} presented to the Emergency Department with a two-day history of worsening shortness of breath and a productive cough.",
        "{they} was brought in by ambulance after a fall at home; there was no loss of consciousness.",
        "{they} attended with central chest tightness radiating to the left arm, which settled with glyceryl trinitrate spray.",
        "{they} reported three weeks of increasing fatigue, reduced appetite and unintentional weight loss of about three kilograms.",
        "{they} described intermittent palpitations, lasting minutes at a time, over the last two months.",
        "{they} has had pain and stiffness in the right knee for eighteen months, now limiting walking to about 200 metres.",
        "{they} noticed a changing pigmented lesion on the left forearm that has grown over the last six months.",
    ),
    "history": (
        "Past medical history includes type 2 diabetes mellitus, essential hypertension and osteoarthritis of both knees.",
        "There is a background of chronic obstructive pulmonary disease with two exacerbations in the last year.",
        "{they} lives with a partner in a two-storey house and is independent with personal care.",
        "{they} is an ex-smoker of twenty pack-years and drinks around eight units of alcohol a week.",
        "Family history is notable for ischaemic heart disease in a parent before the age of sixty.",
        "There are no known drug allergies. {they} is up to date with influenza and COVID-19 vaccinations.",
        "{they} had a right total hip replacement some years ago with a good functional result.",
    ),
    "examination": (
        "On examination {they} was alert and orientated. Heart sounds were normal with no added sounds.",
        "Blood pressure was 148/86 mmHg, pulse 78 beats per minute and regular, oxygen saturation 96% on air.",
        "Chest examination revealed coarse crackles at the right base with reduced air entry.",
        "The right knee had a small effusion, crepitus through a reduced range of movement and medial joint line tenderness.",
        "There was mild pitting oedema to the mid-shins bilaterally. Calves were soft and non-tender.",
        "The lesion measured 7 by 5 millimetres with irregular borders and two shades of brown on dermoscopy.",
        "Abdomen was soft and non-tender with no organomegaly. Bowel sounds were present.",
    ),
    "investigations": (
        "Chest radiograph showed right lower zone consolidation with no effusion.",
        "Electrocardiogram showed sinus rhythm at 76 beats per minute with no acute ischaemic changes.",
        "C-reactive protein was 86 mg/L on admission and fell to 12 mg/L before discharge.",
        "HbA1c was 58 mmol/mol, slightly above target; renal function was stable with an eGFR of 64.",
        "Echocardiogram showed mild left ventricular hypertrophy with preserved systolic function.",
        "Plain radiographs of the knee showed medial joint space narrowing and osteophytes.",
        "A 24-hour ECG recorded occasional ventricular ectopics but no sustained arrhythmia.",
    ),
    "course": (
        "{they} was treated with intravenous antibiotics for 48 hours and then switched to oral co-amoxiclav.",
        "Physiotherapy reviewed {them} on the ward and {they} was mobile with a frame before discharge.",
        "Oxygen was weaned over three days and {they} remained stable on room air thereafter.",
        "The diabetes team advised on insulin adjustment during the admission; glucose control improved.",
        "{they} was seen by the occupational therapist, who arranged a perching stool and bath board.",
        "Medicines reconciliation was completed by the ward pharmacist on the day of discharge.",
    ),
    "plan": (
        "Please could the practice recheck urea and electrolytes in one week after the change in diuretic dose.",
        "We will review {them} in the outpatient clinic in three months with a repeat echocardiogram.",
        "Please continue the new medication and review blood pressure in four weeks.",
        "{they} has been given written advice and knows to seek help if symptoms recur.",
        "I have requested an MRI of the knee and will write again with the result.",
        "No further hospital follow-up is needed; we have discharged {them} back to your care.",
        "Please refer back if there is any change in the lesion before the planned excision date.",
    ),
    "referral": (
        "I would be grateful if you could see this {person} who has symptoms suggestive of stable angina.",
        "I would appreciate your assessment and advice on further management of this knee pain.",
        "I am referring {them} under the two-week-wait pathway because of the suspicious skin lesion.",
        "I would be grateful for physiotherapy assessment and an exercise programme for knee osteoarthritis.",
        "Please could you assess {them} for possible paroxysmal atrial fibrillation.",
    ),
    "medication": (
        "Current medication: metformin 1 g twice daily, ramipril 5 mg once daily, atorvastatin 20 mg at night.",
        "Current medication: amlodipine 10 mg once daily, paracetamol 1 g four times daily as required.",
        "New medication: bisoprolol 2.5 mg once daily, started during this admission.",
        "Stopped: naproxen, because of a decline in renal function. Please do not restart.",
        "Changed: furosemide increased from 20 mg to 40 mg once daily.",
    ),
    "results_comment": (
        "Results reviewed. Mild normocytic anaemia; suggest repeat full blood count in six weeks.",
        "HbA1c improved since last year. Lipids within target on current statin dose.",
        "Renal function stable. Potassium at the upper end of normal; no action needed.",
        "Liver function tests normal. Thyroid function normal.",
    ),
    "imaging": (
        "Clinical details: knee pain, ? osteoarthritis. Weight-bearing views requested.",
        "Findings: medial compartment joint space narrowing with marginal osteophytes and subchondral sclerosis.",
        "No fracture or destructive bony lesion. Small suprapatellar effusion.",
        "Conclusion: moderate medial compartment osteoarthritis of the right knee.",
    ),
    "operative": (
        "Procedure: right knee arthroscopy, partial medial meniscectomy, under general anaesthetic.",
        "Findings: degenerate tear of the posterior horn of the medial meniscus; grade 2 chondral change.",
        "The torn segment was debrided to a stable rim. Portals closed with adhesive strips.",
        "Post-operative: full weight-bearing as tolerated, wound check at the practice in 10 to 14 days.",
    ),
    "physio": (
        "Assessment: reduced quadriceps strength and a mildly antalgic gait; pain 6 out of 10 on stairs.",
        "Treatment: six sessions of progressive strengthening and balance exercises with a home programme.",
        "Outcome: pain reduced to 2 out of 10 and walking tolerance improved to 30 minutes.",
        "{they} has been discharged from physiotherapy with advice to continue the home exercises.",
    ),
    "memory": (
        "{they} scored 22 out of 30 on the Montreal Cognitive Assessment, losing points on delayed recall and clock drawing.",
        "A relative reports gradual forgetfulness over two years, repeated questions and missed appointments.",
        "CT head showed generalised atrophy and mild small vessel disease, with no space-occupying lesion.",
        "The diagnosis of mild cognitive impairment was discussed with {them} and the family today.",
        "We have offered a place on the cognitive stimulation therapy group and will review in six months.",
    ),
    "ambulance": (
        "Called at 07:42 to a fall in the home. Found on the kitchen floor, alert, GCS 15.",
        "Observations: respiratory rate 18, SpO2 95%, BP 132/80, pulse 88, temperature 36.8, blood glucose 7.1.",
        "No head injury. Small skin tear to the left forearm dressed on scene.",
        "Conveyed to the Emergency Department for assessment; handover completed at 08:55.",
    ),
    "safeguarding": (
        "This summary contains third-party information and is not to be disclosed to the patient.",
        "Attendees: practice safeguarding lead, health visitor, adult social care, community matron.",
        "Concerns were discussed regarding the home situation and a support plan was agreed.",
        "Actions: social care to visit within 7 days; practice to flag the record and review at the next meeting.",
    ),
    "general": (
        "Thank you for your letter, which I have read with interest.",
        "I have discussed the findings and the options with {them} in detail today.",
        "{they} was accompanied by a relative, who found the explanation helpful.",
        "We agreed to continue with the current plan and to review progress at the next appointment.",
        "A copy of this letter has been sent to the patient at their request.",
        "Please do not hesitate to contact the department if you have any questions.",
    ),
}

_KINDS: dict[str, tuple[tuple[str, str], ...]] = {
    # kind: (heading, bank) sections, in order
    "discharge": (
        ("Presenting complaint", "presenting"),
        ("Background", "history"),
        ("Investigations", "investigations"),
        ("Hospital course", "course"),
        ("Medication changes", "medication"),
        ("Actions for GP", "plan"),
    ),
    "referral": (
        ("Reason for referral", "referral"),
        ("History", "presenting"),
        ("Past history", "history"),
        ("Examination", "examination"),
        ("Medication and allergies", "medication"),
    ),
    "clinic": (
        ("Summary", "presenting"),
        ("History", "history"),
        ("Examination", "examination"),
        ("Investigations", "investigations"),
        ("Plan", "plan"),
    ),
    "results": (("Comment", "results_comment"),),
    "imaging": (("Report", "imaging"),),
    "operative": (("Operation note", "operative"), ("Follow-up", "plan")),
    "physio": (("Physiotherapy summary", "physio"), ("Plan", "plan")),
    "memory": (
        ("Referral", "presenting"),
        ("Collateral history", "memory"),
        ("Background", "history"),
        ("Cognitive testing", "memory"),
        ("Examination", "examination"),
        ("Imaging", "investigations"),
        ("Diagnosis and discussion", "memory"),
        ("Plan", "plan"),
    ),
    "ambulance": (("Patient report form", "ambulance"),),
    "safeguarding": (("Meeting summary", "safeguarding"),),
    "letter": (("", "general"), ("", "plan")),
    "note": (("Message", "general"),),
}

LETTER_KINDS = tuple(_KINDS)
_FIRST_PAGE_SECTIONS = 3
_PAGE_SECTIONS = 6

_RESULT_ROWS: tuple[tuple[str, float, float, float, str], ...] = (
    # test, typical value, low, high, unit
    ("Haemoglobin", 128, 115, 165, "g/L"),
    ("White cell count", 7.2, 4.0, 11.0, "10^9/L"),
    ("Platelets", 255, 150, 400, "10^9/L"),
    ("Sodium", 139, 133, 146, "mmol/L"),
    ("Potassium", 4.6, 3.5, 5.3, "mmol/L"),
    ("Creatinine", 88, 45, 84, "umol/L"),
    ("eGFR", 64, 60, 120, "mL/min/1.73m2"),
    ("HbA1c", 56, 20, 48, "mmol/mol"),
    ("Total cholesterol", 4.6, 0, 5.0, "mmol/L"),
    ("ALT", 24, 0, 40, "U/L"),
    ("TSH", 2.1, 0.3, 4.2, "mU/L"),
)


def _pronouns(patient_name: str) -> dict[str, str]:
    title = patient_name.split(" ", 1)[0]
    if title in {"Mrs", "Ms", "Miss"}:
        return {"they": "She", "them": "her", "person": "woman"}
    if title == "Mr":
        return {"they": "He", "them": "him", "person": "man"}
    return {"they": "The patient", "them": "the patient", "person": "patient"}


def _paragraph(rng: random.Random, bank: str, words: dict[str, str], n: int) -> str:
    pool = list(_BANK[bank])
    rng.shuffle(pool)
    chosen = pool[: min(n, len(pool))]
    while len(chosen) < n:
        chosen.append(rng.choice(_BANK["general"]))
    text = " ".join(s.format(**words) for s in chosen)
    return text[0].upper() + text[1:]


def compose_letter(
    kind: str,
    *,
    seed: str,
    sender: Sender,
    recipient: tuple[str, ...],
    salutation: str,
    patient: PatientDetails,
    written_on: date,
    title: str,
    author: str,
    author_role: str,
    pages: int = 1,
) -> Letter:
    """Write a synthetic letter of `kind` (see LETTER_KINDS) spread over `pages` pages."""
    if kind not in _KINDS:
        raise ValueError(f"unknown letter kind {kind!r}; expected one of {LETTER_KINDS}")
    if not 1 <= pages <= 12:
        raise ValueError("pages must be between 1 and 12")
    rng = random.Random(f"letter:{seed}")
    words = _pronouns(patient.name)
    # Page 1 holds the letterhead, so it takes fewer sections than the pages after it.
    capacity = [_FIRST_PAGE_SECTIONS] + [_PAGE_SECTIONS] * (pages - 1)
    if kind == "results":
        capacity[0] = 1  # the results table fills most of page 1
    planned = list(_KINDS[kind])
    if len(planned) > sum(capacity):  # keep the closing section (the plan, the actions)
        planned = planned[: sum(capacity) - 1] + planned[-1:]
    while len(planned) < sum(capacity) - 1:
        extra = rng.choice(("general", "history", "plan", "examination", "course"))
        planned.insert(len(planned) - 1, ("Further notes", extra))
    sections = [
        (heading, _paragraph(rng, bank, words, rng.randint(2, 4))) for heading, bank in planned
    ]
    per_page: list[list[tuple[str, str]]] = []
    for room in capacity:
        per_page.append(sections[:room])
        sections = sections[room:]
    table: tuple[tuple[str, ...], ...] = ()
    table_title = ""
    if kind == "results":
        rows: list[tuple[str, ...]] = [("Test", "Result", "Units", "Reference range", "Flag")]
        for name, typical, low, high, unit in _RESULT_ROWS:
            value = typical * rng.uniform(0.85, 1.15)
            shown = f"{value:.1f}" if typical < 20 else f"{value:.0f}"
            flag = "H" if value > high else ("L" if value < low else "")
            rows.append((name, shown, unit, f"{low:g} - {high:g}", flag))
        table = tuple(rows)
        table_title = f"Sample collected {written_on:%d %b %Y}; reported {written_on:%d %b %Y}"
    return Letter(
        sender=sender,
        recipient=recipient,
        salutation=salutation,
        patient=patient,
        written_on=written_on,
        title=title,
        author=author,
        author_role=author_role,
        pages=tuple(tuple(page) for page in per_page),
        table=table,
        table_title=table_title,
    )


# --------------------------------------------------------------------------- PDF


def _latin1(text: str) -> str:
    """The PDF core fonts are Latin-1 only: swap the few typographic characters we use."""
    swaps = {"—": "-", "–": "-", "’": "'", "‘": "'", "“": '"', "”": '"', "…": "..."}
    text = "".join(swaps.get(ch, ch) for ch in text)
    return text.encode("latin-1", "replace").decode("latin-1")


class _LetterPDF(FPDF):
    def __init__(self, letter: Letter) -> None:
        super().__init__(format="A4")
        self.letter = letter
        self.set_creation_date(datetime.combine(letter.written_on, time(9, 0), tzinfo=UTC))
        self.set_title(_latin1(letter.title))
        self.set_author(_latin1(letter.author))
        self.set_creator("GP Connect provider sandbox")
        self.set_producer("GP Connect provider sandbox")
        self.set_auto_page_break(True, margin=22)
        self.set_margins(20, 18, 20)

    def header(self) -> None:
        if self.page_no() == 1:
            return
        self.set_font("Helvetica", size=8)
        self.set_text_color(90)
        p = self.letter.patient
        self.cell(
            0,
            5,
            _latin1(
                f"{p.name}   NHS number {p.nhs_number_spaced}   {self.letter.title} (continued)"
            ),
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )
        self.ln(4)
        self.set_text_color(0)

    def footer(self) -> None:
        self.set_y(-15)
        self.set_font("Helvetica", size=8)
        self.set_text_color(120)
        self.cell(0, 5, SYNTHETIC_NOTICE, align="L")
        self.set_x(self.l_margin)
        self.cell(0, 5, f"Page {self.page_no()} of {{nb}}", align="R")
        self.set_text_color(0)

    def letterhead(self) -> None:
        s = self.letter.sender
        self.set_font("Helvetica", style="B", size=15)
        self.set_text_color(0, 48, 135)
        self.cell(0, 8, _latin1(s.name), new_x=XPos.LMARGIN, new_y=YPos.NEXT, align="R")
        self.set_text_color(0)
        self.set_font("Helvetica", size=9)
        for line in (s.department, *s.address, f"Telephone {s.phone}"):
            if line:
                self.cell(0, 4.5, _latin1(line), new_x=XPos.LMARGIN, new_y=YPos.NEXT, align="R")
        self.ln(6)
        self.set_font("Helvetica", size=10)
        for line in self.letter.recipient:
            self.cell(0, 5, _latin1(line), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(3)
        self.cell(
            0,
            5,
            f"Date: {self.letter.written_on:%d %B %Y}",
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
            align="R",
        )
        self.ln(3)
        p = self.letter.patient
        top = self.get_y()
        self.set_fill_color(240, 244, 248)
        self.rect(self.l_margin, top, self.epw, 24, style="DF")
        self.set_xy(self.l_margin + 3, top + 2)
        self.set_font("Helvetica", style="B", size=10)
        self.cell(0, 5, _latin1(f"Re: {p.name}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_font("Helvetica", size=9)
        for line in (
            f"NHS number: {p.nhs_number_spaced}    Date of birth: {p.birth_date:%d-%b-%Y}",
            "Address: " + ", ".join(p.address),
        ):
            self.set_x(self.l_margin + 3)
            self.cell(0, 5, _latin1(line), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_y(top + 28)
        self.set_font("Helvetica", style="B", size=12)
        self.multi_cell(0, 6, _latin1(self.letter.title), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(2)
        self.set_font("Helvetica", size=10)
        self.cell(0, 5, _latin1(f"{self.letter.salutation},"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(2)

    def results_table(self) -> None:
        rows = self.letter.table
        if not rows:
            return
        widths = (52, 24, 30, 40, 14)
        self.set_font("Helvetica", size=8)
        self.cell(0, 5, _latin1(self.letter.table_title), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        for i, row in enumerate(rows):
            self.set_font("Helvetica", style="B" if i == 0 or row[-1] else "", size=9)
            for width, value in zip(widths, row, strict=False):
                self.cell(width, 6, _latin1(value), border=1)
            self.ln(6)
        self.ln(3)

    def sections(self, page: tuple[tuple[str, str], ...], *, reserve: float) -> None:
        """Write the sections that fit on this page, leaving `reserve` mm free below them.

        A section that would spill onto a new page is left out, so a letter always has
        exactly as many pages as `letter.pages` (the other formats keep every section).
        """
        for heading, text in page:
            self.set_font("Helvetica", size=10)
            lines = self.wrap(_latin1(text), self.epw)
            needed = (6 if heading else 0) + 5 * len(lines) + 2
            if self.will_page_break(needed + reserve):
                continue
            if heading:
                self.set_font("Helvetica", style="B", size=10)
                self.cell(0, 6, _latin1(heading), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            self.set_font("Helvetica", size=10)
            for line in lines:
                self.cell(0, 5, line, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            self.ln(2)

    def wrap(self, text: str, width: float) -> list[str]:
        """Break `text` into lines no wider than `width` in the current font, measuring each
        word once (fpdf2's own line breaking is far slower on long paragraphs)."""
        space = self.get_string_width(" ")
        lines: list[str] = []
        line: list[str] = []
        used = 0.0
        for word in text.split():
            w = self.get_string_width(word)
            if line and used + space + w > width:
                lines.append(" ".join(line))
                line, used = [], 0.0
            used += (space if line else 0.0) + w
            line.append(word)
        if line:
            lines.append(" ".join(line))
        return lines

    def signature(self) -> None:
        self.ln(2)
        self.set_font("Helvetica", size=10)
        self.cell(0, 5, "Yours sincerely,", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(8)
        self.set_font("Helvetica", style="B", size=10)
        self.cell(0, 5, _latin1(self.letter.author), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_font("Helvetica", size=9)
        self.cell(0, 5, _latin1(self.letter.author_role), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.cell(0, 5, _latin1(self.letter.sender.name), new_x=XPos.LMARGIN, new_y=YPos.NEXT)


_SIGNATURE_HEIGHT = 36


def _render_letter(pdf: _LetterPDF) -> None:
    letter = pdf.letter
    for number, page in enumerate(letter.pages, start=1):
        pdf.add_page()
        if number == 1:
            pdf.letterhead()
            pdf.results_table()
        pdf.sections(page, reserve=_SIGNATURE_HEIGHT if number == len(letter.pages) else 0)
    pdf.signature()


def pdf_bytes(letter: Letter) -> bytes:
    """The letter as a PDF: letterhead, patient block, one page per `letter.pages` entry."""
    pdf = _LetterPDF(letter)
    _render_letter(pdf)
    return bytes(pdf.output())


def large_scan_pdf(letter: Letter, *, target_size: int, seed: str, plates: int = 3) -> bytes:
    """A valid PDF of about `target_size` bytes: the letter, then `plates` full-page colour
    images of incompressible noise (standing in for high-resolution medical photographs)."""
    base = len(pdf_bytes(letter))
    pdf = _LetterPDF(letter)
    _render_letter(pdf)
    # fpdf2 deflates the raw RGB pixels; noise does not compress, so the file grows by about
    # the raw size plus a small per-image overhead.
    per_plate = max((target_size - base) // plates - 2048, 3 * 64 * 64)
    width = 1024
    rng = random.Random(f"plates:{seed}")
    for n in range(plates):
        height = per_plate // (3 * width)
        noise = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
        pdf.add_page()
        pdf.set_font("Helvetica", style="B", size=11)
        pdf.cell(
            0,
            6,
            _latin1(f"Plate {n + 1} of {plates}: clinical photograph (high resolution)"),
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )
        pdf.image(noise, x=pdf.l_margin, y=pdf.get_y() + 2, w=pdf.epw, h=pdf.epw * height / width)
    return bytes(pdf.output())


# --------------------------------------------------------------------------- other text formats


def _fixed_zip(data: bytes, when: date) -> bytes:
    """Rewrite a zip (DOCX) with fixed entry times, so its bytes do not depend on the clock."""
    stamp = (max(when.year, 1980), when.month, when.day, 9, 0, 0)
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for item in source.infolist():
            info = zipfile.ZipInfo(item.filename, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            target.writestr(info, source.read(item.filename))
    return out.getvalue()


def docx_bytes(letter: Letter) -> bytes:
    """The letter as a Word document: headings, paragraphs and a details table."""
    document = docx.Document()
    written = datetime.combine(letter.written_on, time(9, 0))
    props = document.core_properties
    props.title = letter.title
    props.author = letter.author
    props.last_modified_by = letter.author
    props.comments = SYNTHETIC_NOTICE
    props.created = written
    props.modified = written
    props.revision = 1
    document.add_heading(letter.sender.name, level=1)
    for line in (
        letter.sender.department,
        *letter.sender.address,
        f"Telephone {letter.sender.phone}",
    ):
        if line:
            document.add_paragraph(line)
    document.add_paragraph(f"Date: {letter.written_on:%d %B %Y}")
    document.add_paragraph("\n".join(letter.recipient))
    p = letter.patient
    details = document.add_table(rows=0, cols=2)
    details.style = "Table Grid"
    for label, value in (
        ("Patient", p.name),
        ("NHS number", p.nhs_number_spaced),
        ("Date of birth", f"{p.birth_date:%d-%b-%Y}"),
        ("Address", ", ".join(p.address)),
    ):
        cells = details.add_row().cells
        cells[0].text = label
        cells[1].text = value
    document.add_heading(letter.title, level=2)
    document.add_paragraph(f"{letter.salutation},")
    if letter.table:
        results = document.add_table(rows=0, cols=len(letter.table[0]))
        results.style = "Table Grid"
        for row in letter.table:
            for cell, value in zip(results.add_row().cells, row, strict=True):
                cell.text = value
    for heading, text in letter.sections:
        if heading:
            document.add_heading(heading, level=3)
        document.add_paragraph(text)
    document.add_paragraph("Yours sincerely,")
    signature = document.add_paragraph()
    signature.add_run(letter.author).bold = True
    signature.add_run(f"\n{letter.author_role}")
    notice = document.add_paragraph()
    run = notice.add_run(SYNTHETIC_NOTICE)
    run.italic = True
    run.font.size = docx.shared.Pt(8)
    out = io.BytesIO()
    document.save(out)
    return _fixed_zip(out.getvalue(), letter.written_on)


def _rtf_escape(text: str) -> str:
    out: list[str] = []
    for ch in text:
        code = ord(ch)
        if ch in "\\{}":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\line ")
        elif code < 128:
            out.append(ch)
        else:
            # RTF \uN takes a signed 16-bit value, then one fallback character.
            for unit in struct.unpack(
                f"<{len(ch.encode('utf-16-le')) // 2}H", ch.encode("utf-16-le")
            ):
                out.append(f"\\u{unit - 65536 if unit > 32767 else unit}?")
    return "".join(out)


def rtf_bytes(letter: Letter) -> bytes:
    """The letter as RTF 1 (plain ASCII with escapes): font table, bold heading, paragraphs."""
    e = _rtf_escape
    p = letter.patient
    parts = [
        "{\\rtf1\\ansi\\ansicpg1252\\deff0",
        "{\\fonttbl{\\f0\\fswiss\\fcharset0 Arial;}{\\f1\\froman\\fcharset0 Times New Roman;}}",
        "{\\colortbl;\\red0\\green48\\blue135;\\red110\\green110\\blue110;}",
        f"{{\\info{{\\title {e(letter.title)}}}{{\\author {e(letter.author)}}}"
        f"{{\\creatim\\yr{letter.written_on.year}\\mo{letter.written_on.month}\\dy{letter.written_on.day}}}}}",
        "\\paperw11906\\paperh16838\\margl1134\\margr1134\\margt1134\\margb1134",
        f"\\pard\\qr\\f0\\fs32\\b\\cf1 {e(letter.sender.name)}\\cf0\\b0\\fs20\\par",
    ]
    for line in (
        letter.sender.department,
        *letter.sender.address,
        f"Telephone {letter.sender.phone}",
    ):
        if line:
            parts.append(f"{e(line)}\\par")
    parts.append("\\pard\\ql\\sa120\\par")
    parts.extend(f"{e(line)}\\par" for line in letter.recipient)
    parts.append(f"\\pard\\qr Date: {e(f'{letter.written_on:%d %B %Y}')}\\par\\pard\\ql")
    parts.append(
        f"\\b Re: {e(p.name)}\\b0\\line NHS number: {e(p.nhs_number_spaced)}"
        f"\\line Date of birth: {e(f'{p.birth_date:%d-%b-%Y}')}\\line Address: {e(', '.join(p.address))}\\par"
    )
    parts.append(f"\\sa200{{\\b\\fs26 {e(letter.title)}}}\\par")
    parts.append(f"{e(letter.salutation)},\\par")
    for heading, text in letter.sections:
        if heading:
            parts.append(f"{{\\b {e(heading)}}}\\par")
        parts.append(f"{e(text)}\\par")
    parts.append(
        f"Yours sincerely,\\par\\sa60{{\\b {e(letter.author)}}}\\par {e(letter.author_role)}\\par"
    )
    parts.append(f"{{\\i\\fs16\\cf2 {e(SYNTHETIC_NOTICE)}}}\\par")
    parts.append("}")
    return ("\n".join(parts) + "\n").encode("ascii")


def html_bytes(letter: Letter) -> bytes:
    """The letter as an HTML page with a table, a `<script>` and an inline `onclick`.

    They are harmless but visible if run: a viewer must never execute a document's scripts,
    so the sandbox serves realistic-risky HTML for testing that.
    """
    e = html.escape
    p = letter.patient
    rows = "\n".join(
        f"      <tr><th scope='row'>{e(label)}</th><td>{e(value)}</td></tr>"
        for label, value in (
            ("Patient", p.name),
            ("NHS number", p.nhs_number_spaced),
            ("Date of birth", f"{p.birth_date:%d-%b-%Y}"),
            ("Address", ", ".join(p.address)),
            ("Author", f"{letter.author}, {letter.author_role}"),
            ("Date", f"{letter.written_on:%d %B %Y}"),
        )
    )
    table = ""
    if letter.table:
        head = "".join(f"<th>{e(v)}</th>" for v in letter.table[0])
        body = "\n".join(
            "      <tr>" + "".join(f"<td>{e(v)}</td>" for v in row) + "</tr>"
            for row in letter.table[1:]
        )
        table = f"  <table class='results'>\n    <thead><tr>{head}</tr></thead>\n    <tbody>\n{body}\n    </tbody>\n  </table>\n"
    sections = "\n".join(
        (f"  <h2>{e(heading)}</h2>\n" if heading else "") + f"  <p>{e(text)}</p>"
        for heading, text in letter.sections
    )
    document = f"""<!DOCTYPE html>
<html lang="en-GB">
<head>
  <meta charset="utf-8">
  <title>{e(letter.title)}</title>
  <style>
    body {{ font-family: Arial, sans-serif; max-width: 50em; margin: 2em auto; }}
    table {{ border-collapse: collapse; margin: 1em 0; }}
    th, td {{ border: 1px solid #999; padding: 0.25em 0.6em; text-align: left; }}
    .notice {{ color: #666; font-size: small; }}
  </style>
  <script>
    // Sandbox test: a viewer must never run a document's scripts. If this runs, it says so.
    document.addEventListener("DOMContentLoaded", function () {{
      document.body.insertAdjacentHTML("afterbegin",
        "<p id='script-ran' style='background:red;color:white'>SCRIPT EXECUTED: this viewer runs document scripts</p>");
    }});
  </script>
</head>
<body>
  <header>
    <h1>{e(letter.sender.name)}</h1>
    <p>{e(", ".join(a for a in (letter.sender.department, *letter.sender.address) if a))}. Telephone {e(letter.sender.phone)}</p>
  </header>
  <h2>{e(letter.title)}</h2>
  <table class="details">
{rows}
  </table>
{table}{sections}
  <p><button type="button" onclick="alert('onclick executed: this viewer runs inline event handlers')">Acknowledge</button></p>
  <p>Yours sincerely,<br><strong>{e(letter.author)}</strong><br>{e(letter.author_role)}</p>
  <p class="notice">{e(SYNTHETIC_NOTICE)}</p>
</body>
</html>
"""
    return document.encode("utf-8")


def text_bytes(letter: Letter) -> bytes:
    """The letter as plain UTF-8 text, lines wrapped at 78 characters."""
    p = letter.patient
    lines = [
        letter.sender.name,
        *[a for a in (letter.sender.department, *letter.sender.address) if a],
        f"Telephone {letter.sender.phone}",
        "",
        f"Date: {letter.written_on:%d %B %Y}",
        "",
        f"Patient: {p.name}",
        f"NHS number: {p.nhs_number_spaced}",
        f"Date of birth: {p.birth_date:%d-%b-%Y}",
        "",
        letter.title,
        "=" * min(len(letter.title), 78),
        "",
    ]
    for heading, text in letter.sections:
        if heading:
            lines.extend((heading, "-" * len(heading)))
        lines.extend(textwrap.wrap(text, 78))
        lines.append("")
    lines.extend((letter.author, letter.author_role, "", SYNTHETIC_NOTICE, ""))
    return "\n".join(lines).encode("utf-8")


def pathology_xml(letter: Letter, *, lab_code: str) -> bytes:
    """A pathology report as XML: the letter's results table, with patient and lab details."""
    p = letter.patient
    root = ET.Element(
        "PathologyReport",
        {"xmlns": "urn:sandbox:gpconnect:pathology:1", "status": "final", "synthetic": "true"},
    )
    ET.SubElement(root, "Notice").text = SYNTHETIC_NOTICE
    lab = ET.SubElement(root, "Laboratory", {"odsCode": lab_code})
    ET.SubElement(lab, "Name").text = letter.sender.name
    patient = ET.SubElement(root, "Patient")
    ET.SubElement(patient, "NHSNumber").text = p.nhs_number
    ET.SubElement(patient, "Name").text = p.name
    ET.SubElement(patient, "BirthDate").text = p.birth_date.isoformat()
    request = ET.SubElement(root, "Request")
    ET.SubElement(request, "Title").text = letter.title
    ET.SubElement(request, "Collected").text = letter.written_on.isoformat()
    ET.SubElement(request, "Requester").text = letter.recipient[0]
    results = ET.SubElement(root, "Results")
    for name, value, unit, reference, flag in (row[:5] for row in letter.table[1:]):
        result = ET.SubElement(results, "Result", {"flag": flag} if flag else {})
        ET.SubElement(result, "Test").text = name
        ET.SubElement(result, "Value", {"unit": unit}).text = value
        ET.SubElement(result, "ReferenceRange").text = reference
    ET.SubElement(root, "Comment").text = " ".join(text for _, text in letter.sections)
    ET.indent(root)
    body: bytes = ET.tostring(root, encoding="unicode").encode("utf-8")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body + b"\n"


# --------------------------------------------------------------------------- images


def _ascii(text: str) -> str:
    """Text for drawing on images: the default font lacks accents and dashes."""
    text = text.replace("—", "-").replace("–", "-").replace("£", "GBP ")
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def scanned_tiff(letter: Letter, *, pages: int = 3) -> bytes:
    """The letter "scanned": a multi-page grey-scale TIFF with speckle and a slight tilt."""
    rng = random.Random(f"scan:{letter.title}:{letter.written_on}")
    width, height = 827, 1169  # A4 at 100 dpi
    body, small, big = _font(15), _font(12), _font(24)
    frames: list[Image.Image] = []
    sections = list(letter.sections)
    per_page = max(1, math.ceil(len(sections) / pages))
    for number in range(pages):
        page = Image.new("L", (width, height), 243)
        draw = ImageDraw.Draw(page)
        y = 60
        if number == 0:
            draw.text((width - 60, y), _ascii(letter.sender.name), fill=25, font=big, anchor="ra")
            y += 40
            for line in (*letter.sender.address, f"Telephone {letter.sender.phone}"):
                draw.text((width - 60, y), _ascii(line), fill=40, font=small, anchor="ra")
                y += 18
            y += 20
            p = letter.patient
            for line in (
                f"Re: {p.name}",
                f"NHS number {p.nhs_number_spaced}   DOB {p.birth_date:%d-%b-%Y}",
                f"Date: {letter.written_on:%d %B %Y}",
            ):
                draw.text((70, y), _ascii(line), fill=20, font=body)
                y += 24
            y += 10
            draw.text((70, y), _ascii(letter.title), fill=10, font=_font(18))
            y += 40
        for heading, text in sections[number * per_page : (number + 1) * per_page]:
            if heading:
                draw.text((70, y), _ascii(heading), fill=10, font=body)
                y += 26
            for line in textwrap.wrap(_ascii(text), 88):
                draw.text((70, y), line, fill=35, font=body)
                y += 21
            y += 14
        if number == pages - 1:
            draw.text(
                (70, y + 20),
                _ascii(f"Signed: {letter.author}, {letter.author_role}"),
                fill=20,
                font=body,
            )
        draw.text(
            (70, height - 50),
            f"{SYNTHETIC_NOTICE}    Page {number + 1} of {pages}",
            fill=90,
            font=small,
        )
        # Scanner speckle, a punched-hole shadow and a slight tilt.
        for _ in range(900):
            x, yy = rng.randrange(width), rng.randrange(height)
            draw.point((x, yy), fill=rng.randrange(60, 200))
        draw.ellipse((18, height // 2 - 14, 46, height // 2 + 14), fill=200)
        page = page.rotate(
            rng.uniform(-0.8, 0.8), resample=Image.Resampling.BILINEAR, fillcolor=255
        )
        frames.append(page)
    out = io.BytesIO()
    frames[0].save(
        out,
        format="TIFF",
        save_all=True,
        append_images=frames[1:],
        compression="tiff_deflate",
        dpi=(100, 100),
    )
    return out.getvalue()


def skin_photo(
    *, seed: str, size: tuple[int, int] = (800, 600), format: str = "JPEG", quality: int = 88
) -> bytes:
    """A photo-like image (skin-tone gradient, a lesion, sensor noise): a dermatology or wound
    photograph stand-in. `format` is any Pillow writer: "JPEG", "PNG", "BMP"."""
    rng = random.Random(f"photo:{seed}")
    width, height = size
    base = (rng.randint(200, 235), rng.randint(150, 185), rng.randint(120, 150))
    gradient = Image.linear_gradient("L").resize((width, height)).rotate(rng.choice((0, 90, 180)))
    light = Image.new("RGB", size, tuple(min(255, c + 25) for c in base))
    dark = Image.new("RGB", size, tuple(max(0, c - 40) for c in base))
    image = Image.composite(light, dark, gradient)
    lesion = Image.new("L", size, 0)
    draw = ImageDraw.Draw(lesion)
    cx, cy = width // 2 + rng.randint(-60, 60), height // 2 + rng.randint(-40, 40)
    points = []
    for k in range(24):
        angle = 2 * math.pi * k / 24
        radius = min(width, height) * rng.uniform(0.09, 0.16)
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    draw.polygon(points, fill=255)
    lesion = lesion.filter(ImageFilter.GaussianBlur(radius=9))
    colour = (rng.randint(90, 150), rng.randint(30, 70), rng.randint(30, 60))
    image = Image.composite(Image.new("RGB", size, colour), image, lesion)
    noise = Image.frombytes("L", size, rng.randbytes(width * height)).convert("RGB")
    image = Image.blend(image, noise, 0.06)
    ImageDraw.Draw(image).text(
        (10, height - 22), SYNTHETIC_NOTICE, fill=(255, 255, 255), font=_font(12)
    )
    out = io.BytesIO()
    if format == "JPEG":
        image.save(out, format="JPEG", quality=quality)
    else:
        image.save(out, format=format)
    return out.getvalue()


def ecg_png(*, seed: str, heart_rate: int = 72) -> bytes:
    """A 12-lead-style rhythm strip (lead II): pink grid, a PQRST trace, labels."""
    rng = random.Random(f"ecg:{seed}")
    width, height, mm = 1500, 420, 6  # 6 px per millimetre
    image = Image.new("RGB", (width, height), (255, 250, 250))
    draw = ImageDraw.Draw(image)
    for x in range(0, width, mm):
        draw.line((x, 0, x, height), fill=(250, 200, 200) if x % (5 * mm) else (240, 150, 150))
    for y in range(0, height, mm):
        draw.line((0, y, width, y), fill=(250, 200, 200) if y % (5 * mm) else (240, 150, 150))
    baseline = height // 2 + 20
    px_per_second = 25 * mm  # 25 mm/s
    beat = 60.0 / heart_rate

    def wave_at(t: float) -> float:  # millivolts
        phase = t % beat
        v = 0.12 * math.exp(-(((phase - 0.16) / 0.035) ** 2))  # P
        v -= 0.12 * math.exp(-(((phase - 0.255) / 0.01) ** 2))  # Q
        v += 1.3 * math.exp(-(((phase - 0.28) / 0.012) ** 2))  # R
        v -= 0.25 * math.exp(-(((phase - 0.305) / 0.012) ** 2))  # S
        v += 0.3 * math.exp(-(((phase - 0.52) / 0.06) ** 2))  # T
        return v

    wander = rng.uniform(0, math.tau)
    points = []
    for x in range(width):
        t = x / px_per_second
        mv = wave_at(t) + 0.03 * math.sin(t * 1.3 + wander) + rng.uniform(-0.012, 0.012)
        points.append((x, baseline - mv * 10 * mm))
    draw.line(points, fill=(10, 10, 10), width=2)
    font = _font(18)
    draw.text(
        (12, 10), f"II    25 mm/s   10 mm/mV   HR {heart_rate} bpm", fill=(0, 0, 0), font=font
    )
    draw.text((12, height - 28), SYNTHETIC_NOTICE, fill=(90, 90, 90), font=_font(14))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


# --------------------------------------------------------------------------- audio and binary


def _tone_samples(seconds: float, rate: int, frequency: float) -> bytes:
    frames = int(seconds * rate)
    fade = rate // 20
    samples = []
    for i in range(frames):
        envelope = min(1.0, i / fade, (frames - i) / fade)
        samples.append(int(12000 * envelope * math.sin(math.tau * frequency * i / rate)))
    return struct.pack(f"<{frames}h", *samples)


def wav_tone(*, seconds: float = 2.0, frequency: float = 440.0, rate: int = 8000) -> bytes:
    """A short mono 16-bit WAV tone (a dictation stand-in)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(_tone_samples(seconds, rate, frequency))
    return out.getvalue()


def au_tone(*, seconds: float = 1.5, frequency: float = 660.0, rate: int = 8000) -> bytes:
    """A Sun/NeXT .au file: 24-byte big-endian header, then 16-bit linear PCM, big-endian."""
    little = _tone_samples(seconds, rate, frequency)
    count = len(little) // 2
    pcm = struct.pack(f">{count}h", *struct.unpack(f"<{count}h", little))
    # magic, data offset, data size, encoding 3 (16-bit linear PCM), sample rate, channels
    header = struct.pack(">4sIIIII", b".snd", 24, len(pcm), 3, rate, 1)
    return header + pcm


def random_bytes(size: int, *, seed: str) -> bytes:
    """`size` deterministic pseudo-random bytes (an unknown binary format, `.dat`)."""
    return random.Random(f"bytes:{seed}").randbytes(size)


# --------------------------------------------------------------------------- writing


def write_file(path: Path, data: bytes) -> tuple[int, str]:
    """Write `data` to `path` (creating folders); return its size and sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return len(data), hashlib.sha256(data).hexdigest()


def write_stress_pdf(path: Path, size: int, *, seed: str, chunk: int = MIB) -> tuple[int, str]:
    """Write a valid one-page PDF of exactly `size` bytes, most of it an unreferenced stream of
    pseudo-random bytes, a `chunk` at a time (memory stays about one chunk, whatever the size).

    Returns the size and sha256.
    """
    notice = f"Stress test file, {size} bytes. {SYNTHETIC_NOTICE}"
    content = f"BT /F1 14 Tf 72 760 Td ({notice}) Tj ET".encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    head = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(head))
        head += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    filler_number = len(objects) + 1
    offsets.append(len(head))

    def tail_for(filler: int) -> tuple[bytes, bytes]:
        start = b"%d 0 obj\n<< /Length %d >>\nstream\n" % (filler_number, filler)
        end = b"\nendstream\nendobj\n"
        xref_at = len(head) + len(start) + filler + len(end)
        xref = b"xref\n0 %d\n0000000000 65535 f \n" % (filler_number + 1)
        xref += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
        trailer = b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
            filler_number + 1,
            xref_at,
        )
        return start, end + xref + trailer

    # The filler length appears in the file, so settle it by iteration (converges at once
    # unless a digit count changes).
    filler = size - len(head)
    for _ in range(5):
        start, end = tail_for(filler)
        needed = size - len(head) - len(start) - len(end)
        if needed == filler:
            break
        filler = needed
    else:  # pragma: no cover - the lengths always settle
        raise RuntimeError("could not settle the stress file's length")
    if filler < 0:
        raise ValueError(f"size {size} is too small for a stress PDF")
    digest = hashlib.sha256()
    rng = random.Random(f"stress:{seed}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        for piece in (bytes(head), start):
            out.write(piece)
            digest.update(piece)
        left = filler
        while left:
            piece = rng.randbytes(min(chunk, left))
            out.write(piece)
            digest.update(piece)
            left -= len(piece)
        out.write(end)
        digest.update(end)
    return size, digest.hexdigest()
