"""Every route of Uplift. Each view declares an access policy (see accounts/access.py)."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts import access
from expansion import views
from offers.urls import api_urlpatterns as offers_api
from triggers.urls import api_urlpatterns as triggers_api

dashboard_patterns = (
    [path("", views.home, name="home")],
    "dashboard",
)

urlpatterns = [
    path("", views.root, name="root"),
    path("healthz", views.health, name="health"),
    path("dashboard/", include(dashboard_patterns)),
    path("accounts/", include("accounts.urls")),
    path("", include("offers.urls")),
    path(
        "api/schema/",
        access.access(access.PUBLIC)(SpectacularAPIView.as_view()),
        name="api-schema",
    ),
    path(
        "api/docs/",
        access.access(access.PUBLIC)(SpectacularSwaggerSplitView.as_view(url_name="api-schema")),
        name="api-docs",
    ),
    *triggers_api,
    *offers_api,
]
