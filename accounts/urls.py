from django.urls import path

from accounts import views

app_name = "accounts"

urlpatterns = [
    path("signup/", views.signup, name="signup"),
    path("login/", views.login_view, name="login"),
    path("logout/", views.logout_view, name="logout"),
    path("settings/keys/", views.api_keys, name="api-keys"),
    path("settings/keys/<int:key_id>/revoke/", views.revoke_api_key, name="revoke-api-key"),
    path("settings/audit/", views.audit_log, name="audit-log"),
]
