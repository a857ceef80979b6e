from django.urls import path

from billing import views

app_name = "billing"

urlpatterns = [
    path("settings/stripe/", views.stripe_settings, name="stripe-settings"),
    path("settings/stripe/import/", views.start_import, name="stripe-import"),
    path("stripe/webhook/<int:workspace_id>/", views.stripe_webhook, name="stripe-webhook"),
]
