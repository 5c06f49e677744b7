"""The receptionist's appointment pages: find the patient, free slots, book, list, amend, cancel.

Thin views: a form, one service call (viewer.services.appointments), one template. The
services decide who may do what; `require_role` only turns everyone else away early.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseBase
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods
from django.views.decorators.vary import vary_on_headers

from gpconnect import GPConnectError
from viewer.appointment_forms import (
    AmendForm,
    BookingForm,
    CancelForm,
    SlotChoiceForm,
    SlotSearchForm,
)
from viewer.forms import NhsNumberForm
from viewer.http import is_htmx
from viewer.roles import CLINICIAN, RECEPTIONIST, can, require_role
from viewer.services import PatientLookupError
from viewer.services import appointments as service


def _patient(request: HttpRequest, patient_id: str) -> service.BookingPatient:
    return service.appointment_patient_get(
        user=request.user, patient_id=patient_id, session=request.session
    )


@require_http_methods(["GET", "POST"])
@never_cache
@login_required
@require_role(CLINICIAN, RECEPTIONIST)
def start(request: HttpRequest) -> HttpResponse:
    form = NhsNumberForm(request.POST if request.method == "POST" else None)
    error = None
    if form.is_valid():
        try:
            patient = service.appointment_patient_open(
                user=request.user,
                nhs_number=form.cleaned_data["nhs_number"],
                session=request.session,
            )
        except (PatientLookupError, GPConnectError) as exc:
            error = service.error_panel(exc)
        else:
            # POST, then an opaque URL: the NHS number never enters a URL.
            target = "appointment_slots" if can(request.user, "book") else "appointments_booked"
            return redirect(f"viewer:{target}", patient_id=patient.id)
    recent = service.appointment_patients_recent(user=request.user, session=request.session)
    return render(
        request,
        "appointments/start.html",
        {"form": form, "error": error, "recent": recent, "can_book": can(request.user, "book")},
    )


@require_GET
@never_cache
@vary_on_headers("HX-Request")
@login_required
@require_role(RECEPTIONIST)
def slots(request: HttpRequest, patient_id: str) -> HttpResponse:
    patient = _patient(request, patient_id)
    practices = service.federation_practices()
    form = SlotSearchForm(request.GET or None, practices=practices)
    search = None
    if form.is_bound and form.is_valid():
        search = service.slots_search(
            user=request.user,
            patient=patient,
            session=request.session,
            practice_codes=form.cleaned_data["practice"],
            start=form.cleaned_data["start"],
            days=form.cleaned_data["days"],
            filters=form.filters(),
        )
    template = "appointments/slots.html#search" if is_htmx(request) else "appointments/slots.html"
    previous, following = form.week_links() if search else (None, "")
    return render(
        request,
        template,
        {
            "patient": patient,
            "header": patient.header(),
            "form": form,
            "search": search,
            "practices": practices,
            "previous_week": previous,
            "next_week": following,
        },
    )


REGISTRATION_UNCONFIRMED = "Confirm that you have checked these details with the patient"


def _booking_page(
    request: HttpRequest,
    patient: service.BookingPatient,
    choice: dict[str, Any],
    form: BookingForm | None = None,
    error: Exception | None = None,
) -> HttpResponse:
    """The booking form for the chosen slot, checked with the practice again just now."""
    try:
        option = service.booking_option(
            user=request.user,
            patient=patient,
            session=request.session,
            practice_ods=choice["practice"],
            slot_id=choice["slot"],
            start=choice["start"],
        )
    except service.SlotTaken as taken:
        return _taken(request, patient, taken)
    except GPConnectError as exc:
        return _error(request, patient, exc)
    if form is None or error is not None:
        # A new token for each form shown: a failed attempt's token is spent.
        typed = form.cleaned_data if form is not None else {}
        form = BookingForm(initial={**typed, **_choice_data(choice), "token": option.token})
    # Booking without ticking the confirmation is the receptionist's to put right on this
    # form: an error on the checkbox, not a panel about the practice.
    unconfirmed = isinstance(error, service.RegistrationNeeded)
    return render(
        request,
        "appointments/book.html",
        {
            "patient": patient,
            "header": patient.header(),
            "option": option,
            "form": form,
            "error": service.error_panel(error) if error and not unconfirmed else None,
            "registration_error": REGISTRATION_UNCONFIRMED if unconfirmed else "",
            "needs_registration": not option.registered or unconfirmed,
        },
    )


def _choice_data(choice: dict[str, Any]) -> dict[str, str]:
    return {
        "practice": choice["practice"],
        "slot": choice["slot"],
        "start": choice["start"].isoformat(),
    }


@require_http_methods(["GET", "POST"])
@never_cache
@login_required
@require_role(RECEPTIONIST)
def book(request: HttpRequest, patient_id: str) -> HttpResponseBase:
    patient = _patient(request, patient_id)
    if request.method == "GET":
        choice = SlotChoiceForm(request.GET)
        if not choice.is_valid():
            return HttpResponseBadRequest("Choose a slot from the list of free slots.")
        return _booking_page(request, patient, choice.cleaned_data)
    form = BookingForm(request.POST)
    if not form.is_valid():
        choice = SlotChoiceForm(request.POST)
        if not choice.is_valid():
            return HttpResponseBadRequest("Choose a slot from the list of free slots.")
        return _booking_page(request, patient, choice.cleaned_data, form)
    data = form.cleaned_data
    try:
        booking = service.appointment_book(
            user=request.user,
            patient=patient,
            session=request.session,
            practice_ods=data["practice"],
            slot_id=data["slot"],
            start=data["start"],
            length=data["length"],
            description=data["description"],
            comment=data["comment"],
            token=data["token"],
            registration_confirmed=data["confirm_registration"],
        )
    except service.SlotTaken as taken:
        return _taken(request, patient, taken)
    except (service.AppointmentError, GPConnectError) as exc:
        return _booking_page(request, patient, data, form, exc)
    return redirect("viewer:booking", token=booking.token)


def _taken(
    request: HttpRequest, patient: service.BookingPatient, taken: service.SlotTaken
) -> HttpResponse:
    return render(
        request,
        "appointments/taken.html",
        {
            "patient": patient,
            "header": patient.header(),
            "taken": taken,
            "error": service.error_panel(taken),
            "failure": service.error_panel(taken.failure) if taken.failure else None,
        },
    )


def _error(request: HttpRequest, patient: service.BookingPatient, error: Exception) -> HttpResponse:
    status = 503 if getattr(error, "retryable", False) else 502
    return render(
        request,
        "appointments/error.html",
        {"patient": patient, "header": patient.header(), "error": service.error_panel(error)},
        status=status,
    )


@require_GET
@never_cache
@vary_on_headers("HX-Request")
@login_required
@require_role(RECEPTIONIST)
def booking(request: HttpRequest, token: UUID) -> HttpResponse:
    booked = service.booking_get(user=request.user, token=token, session=request.session)
    header = service.booking_patient_header(
        user=request.user, booking=booked, session=request.session
    )
    template = (
        "appointments/booking.html#status" if is_htmx(request) else "appointments/booking.html"
    )
    return render(
        request,
        template,
        {
            "booking": booked,
            "header": header,
            "nhs_number": service.nhs_number_display(booked.nhs_number),
            "summary": service.booking_summary(booked, header),
        },
    )


@require_GET
@never_cache
@login_required
@require_role(CLINICIAN, RECEPTIONIST)
def booked(request: HttpRequest, patient_id: str) -> HttpResponse:
    patient = _patient(request, patient_id)
    practices = service.appointments_list(
        user=request.user, patient=patient, session=request.session
    )
    return render(
        request,
        "appointments/booked.html",
        {
            "patient": patient,
            "header": patient.header(),
            "practices": practices,
            "can_change": can(request.user, "book"),
        },
    )


@require_http_methods(["GET", "POST"])
@never_cache
@login_required
@require_role(RECEPTIONIST)
def amend(request: HttpRequest, patient_id: str, ods: str, key: str) -> HttpResponseBase:
    return _change(request, patient_id, ods, key, AmendForm, "amend")


@require_http_methods(["GET", "POST"])
@never_cache
@login_required
@require_role(RECEPTIONIST)
def cancel(request: HttpRequest, patient_id: str, ods: str, key: str) -> HttpResponseBase:
    return _change(request, patient_id, ods, key, CancelForm, "cancel")


def _change(
    request: HttpRequest,
    patient_id: str,
    ods: str,
    key: str,
    form_class: type[AmendForm] | type[CancelForm],
    action: str,
) -> HttpResponseBase:
    """Amend or cancel: the form with the appointment as it is now; then the change."""
    patient = _patient(request, patient_id)
    form = form_class(request.POST if request.method == "POST" else None)
    error = None
    if form.is_valid():
        try:
            _apply(request, patient, ods, key, action, form.cleaned_data)
        except (service.AppointmentError, GPConnectError) as exc:
            error = service.error_panel(exc)
        else:
            done = "amended" if action == "amend" else "cancelled"
            messages.success(request, f"The appointment has been {done}.")
            return redirect("viewer:appointments_booked", patient_id=patient.id)
    try:
        view = service.appointment_get(
            user=request.user, patient=patient, session=request.session, practice_ods=ods, key=key
        )
    except GPConnectError as exc:
        return _error(request, patient, exc)
    if not form.is_bound or error:
        initial = {"version": view.appointment.version or ""}
        if action == "amend":
            initial |= {"description": view.row.description, "comment": view.row.comment}
        form = form_class(initial=initial)
    return render(
        request,
        f"appointments/{action}.html",
        {
            "patient": patient,
            "header": patient.header(),
            "view": view,
            "form": form,
            "error": error,
        },
    )


def _apply(
    request: HttpRequest,
    patient: service.BookingPatient,
    ods: str,
    key: str,
    action: str,
    data: dict[str, Any],
) -> None:
    common: dict[str, Any] = {
        "user": request.user,
        "patient": patient,
        "session": request.session,
        "practice_ods": ods,
        "key": key,
        "version": data["version"],
    }
    if action == "amend":
        service.appointment_amend(
            **common, description=data["description"], comment=data["comment"]
        )
    else:
        service.appointment_cancel(**common, reason=data["reason"])
