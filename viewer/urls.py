from __future__ import annotations

from django.urls import path

from viewer import views
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
        views.document_print,
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

# The auditor pages.
urlpatterns += [
    path("audit/", audit_search, name="audit"),
    path("audit/export.csv", audit_export, name="audit_export"),
]
