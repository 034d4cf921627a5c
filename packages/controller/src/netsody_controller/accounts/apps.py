from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "netsody_controller.accounts"
    label = "accounts"
