"""URL routes of the dashboard, included at the root by `netsody_controller.urls`."""

from django.urls import path

from netsody_controller.dashboard import views

urlpatterns = [
    path("", views.app_page, name="dashboard"),
    path("callback", views.app_page, name="dashboard-callback"),
    path("dashboard/config.json", views.config_json, name="dashboard-config"),
    path("dashboard/assets/<str:name>", views.asset, name="dashboard-asset"),
]
