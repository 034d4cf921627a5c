from django.apps import AppConfig


class PoliciesConfig(AppConfig):
    name = "netsody_controller.policies"
    label = "policies"
