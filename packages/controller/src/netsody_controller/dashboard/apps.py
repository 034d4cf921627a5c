from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "netsody_controller.dashboard"
    label = "dashboard"
