from django.urls import path

from offers import api, views

app_name = "offers"

urlpatterns = [
    path("upgrade/<str:token>/", views.upgrade, name="upgrade"),
]

api_urlpatterns = [
    path("v1/prompts", api.PromptsView.as_view(), name="api-prompts"),
]
