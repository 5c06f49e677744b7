from __future__ import annotations

from django.urls import path

from viewer import appointment_views, preview_views, views
from viewer.audit_views import audit_export, audit_search

app_name = "viewer"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("patients/<slug:context_id>/", views.patient, name="patient"),
    path("patients/<slug:context_id>/linked/", views.linked, name="linked"),
    path(
        "patients/<slug:context_id>/prefetch-status",
        views.prefetch_status,
        name="prefetch_status",
    ),
    path(
        "patients/<slug:context_id>/documents/<str:document_id>/",
        views.document,
        name="document",
    ),
    path(
        "patients/<slug:context_id>/documents/<str:document_id>/print",
        preview_views.document_print,
        name="document_print",
    ),
    path(
        "patients/<slug:context_id>/documents/<str:document_id>/download",
        views.document_download,
        name="document_download",
    ),
    path(
        "patients/<slug:context_id>/documents/<str:document_id>/inline",
        views.document_inline,
        name="document_inline",
    ),
]

# Previews made on the server, print PDFs and batch printing (viewer/preview_views.py).
urlpatterns += [
    path(
        "patients/<slug:context_id>/documents/<str:document_id>/preview",
        preview_views.document_preview,
        name="document_preview",
    ),
    path(
        "patients/<slug:context_id>/documents/<str:document_id>/preview/retry",
        preview_views.document_preview_retry,
        name="document_preview_retry",
    ),
    path(
        "patients/<slug:context_id>/documents/<str:document_id>/preview/<int:part>",
        preview_views.document_converted,
        name="document_converted",
    ),
    path("patients/<slug:context_id>/print/", preview_views.batch_print, name="batch_print"),
    path(
        "patients/<slug:context_id>/prints/<uuid:token>/",
        preview_views.print_job,
        name="print_job",
    ),
    path(
        "patients/<slug:context_id>/prints/<uuid:token>/status",
        preview_views.print_status,
        name="print_status",
    ),
    path(
        "patients/<slug:context_id>/prints/<uuid:token>/pdf",
        preview_views.print_pdf,
        name="print_pdf",
    ),
]

# The auditor pages.
urlpatterns += [
    path("audit/", audit_search, name="audit"),
    path("audit/export.csv", audit_export, name="audit_export"),
]

# Appointments: the receptionist's flow (viewer/appointment_views.py).
urlpatterns += [
    path("appointments/", appointment_views.start, name="appointments"),
    path(
        "appointments/patients/<slug:patient_id>/",
        appointment_views.slots,
        name="appointment_slots",
    ),
    path(
        "appointments/patients/<slug:patient_id>/book/",
        appointment_views.book,
        name="appointment_book",
    ),
    path(
        "appointments/patients/<slug:patient_id>/booked/",
        appointment_views.booked,
        name="appointments_booked",
    ),
    path(
        "appointments/patients/<slug:patient_id>/booked/<slug:ods>/<slug:key>/amend/",
        appointment_views.amend,
        name="appointment_amend",
    ),
    path(
        "appointments/patients/<slug:patient_id>/booked/<slug:ods>/<slug:key>/cancel/",
        appointment_views.cancel,
        name="appointment_cancel",
    ),
    path("appointments/bookings/<uuid:token>/", appointment_views.booking, name="booking"),
]
