from django.urls import path

from triggers import api

api_urlpatterns = [
    path("v1/track", api.TrackView.as_view(), name="api-track"),
    path("v1/identify", api.IdentifyView.as_view(), name="api-identify"),
    path("v1/group", api.GroupView.as_view(), name="api-group"),
    path("v1/page", api.PageView.as_view(), name="api-page"),
    path("v1/batch", api.BatchView.as_view(), name="api-batch"),
]
