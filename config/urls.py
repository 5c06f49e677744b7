from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from viewer.views import sign_out

urlpatterns = [
    # Before Django's own: sign-out also clears what the browser kept of our pages.
    path("accounts/logout/", sign_out, name="logout"),
    path("", include("viewer.urls")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
]

# NHS-styled error pages with the request id (viewer/error_pages.py).
handler400 = "viewer.error_pages.bad_request"
handler403 = "viewer.error_pages.permission_denied"
handler404 = "viewer.error_pages.not_found"
handler500 = "viewer.error_pages.server_error"
