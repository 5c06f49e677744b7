from __future__ import annotations

from django.urls import path

from viewer import views

app_name = "viewer"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
]
