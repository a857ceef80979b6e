"""Every route of Uplift. Each view declares an access policy (see accounts/access.py)."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts import access
from expansion import api as expansion_api
from expansion import views
from offers.urls import api_urlpatterns as offers_api
from triggers.urls import api_urlpatterns as triggers_api
from triggers.urls import page_urlpatterns as triggers_pages

dashboard_patterns = (
    [
        path("", views.home, name="home"),
        path("export/<slug:table>.csv", views.export, name="export"),
        path("customers/<int:customer_id>/", views.customer_timeline, name="customer"),
    ],
    "dashboard",
)

urlpatterns = [
    # The API first: product code calls it far more often than founders load pages, and Django
    # tries the patterns in order (behind the page includes, /v1/track took 40 µs to resolve).
    *triggers_api,
    *offers_api,
    path("api/v1/metrics", expansion_api.MetricsView.as_view(), name="api-metrics"),
    path("api/v1/opportunities", expansion_api.OpportunitiesView.as_view(), name="api-opportunities"),
    path("", views.root, name="root"),
    path("healthz", views.health, name="health"),
    path("dashboard/", include(dashboard_patterns)),
    path("accounts/", include("accounts.urls")),
    path("rules/", include(triggers_pages)),
    path("", include("offers.urls")),
    path("billing/", include("billing.urls")),
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
]
