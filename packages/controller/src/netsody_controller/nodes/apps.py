from django.apps import AppConfig


class NodesConfig(AppConfig):
    name = "netsody_controller.nodes"
    label = "nodes"
