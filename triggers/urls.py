from django.urls import path

from accounts import api as accounts_api
from triggers import api, manage_api, rules_api, views

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
    path("api/v1/rules", rules_api.RulesView.as_view(), name="api-rules"),
    path("api/v1/rules/<int:rule_id>", rules_api.RuleView.as_view(), name="api-rule"),
    path("api/v1/rule-templates", rules_api.RuleTemplatesView.as_view(), name="api-rule-templates"),
]

page_urlpatterns = (
    [
        path("", views.rules_page, name="rules"),
        path("new/", views.add_rule, name="add-rule"),
        path("<int:rule_id>/toggle/", views.toggle_rule, name="toggle-rule"),
        path("settings/", views.engine_settings, name="engine-settings"),
    ],
    "triggers",
)
