from django.urls import path

from offers import api, dashboard_views, recipient_views, views

app_name = "offers"

urlpatterns = [
    path("upgrade/<str:token>/", views.upgrade, name="upgrade"),
    path("unsubscribe/<str:token>/", recipient_views.unsubscribe, name="unsubscribe"),
    path("email-preferences/<str:token>/", recipient_views.preferences, name="preferences"),
    path("o/<str:token>.gif", recipient_views.open_pixel, name="open-pixel"),
    path("dashboard/offers/", dashboard_views.offer_list, name="offer-list"),
    path("dashboard/offers/templates/", dashboard_views.template_list, name="template-list"),
    path("dashboard/offers/templates/<int:template_id>/", dashboard_views.template_edit, name="template-edit"),
    path(
        "dashboard/offers/templates/<int:template_id>/preview",
        dashboard_views.template_preview,
        name="template-preview",
    ),
]

api_urlpatterns = [
    path("v1/prompts", api.PromptsView.as_view(), name="api-prompts"),
    path("v1/prompts/<int:delivery_id>/events", api.PromptEventView.as_view(), name="api-prompt-events"),
]
