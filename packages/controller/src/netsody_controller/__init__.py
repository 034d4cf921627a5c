"""Netsody controller: the Django project, its API and its background tasks."""

__version__ = "0.1.0"
