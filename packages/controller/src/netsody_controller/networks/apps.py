from django.apps import AppConfig


class NetworksConfig(AppConfig):
    name = "netsody_controller.networks"
    label = "networks"
