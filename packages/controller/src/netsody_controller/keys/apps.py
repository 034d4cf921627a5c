from django.apps import AppConfig


class KeysConfig(AppConfig):
    name = "netsody_controller.keys"
    label = "keys"
