from django.urls import path

from accounts import api as accounts_api
from triggers import api, manage_api

api_urlpatterns = [
    path("v1/track", api.TrackView.as_view(), name="api-track"),
    path("v1/identify", api.IdentifyView.as_view(), name="api-identify"),
    path("v1/group", api.GroupView.as_view(), name="api-group"),
    path("v1/page", api.PageView.as_view(), name="api-page"),
    path("v1/batch", api.BatchView.as_view(), name="api-batch"),
    # Management API (secret key).
    path("api/v1/customers", accounts_api.CustomerListView.as_view(), name="api-customers"),
    path("api/v1/contacts", accounts_api.ContactListView.as_view(), name="api-contacts"),
    path("api/v1/meters", manage_api.MeterListView.as_view(), name="api-meters"),
    path("api/v1/events", manage_api.EventListView.as_view(), name="api-events"),
]
