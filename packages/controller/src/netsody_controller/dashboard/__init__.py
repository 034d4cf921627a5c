"""The administrators' dashboard: a single-page app at `/` that signs in with OIDC and calls /api.

The pages are plain HTML, CSS and JavaScript modules from `static/`, served by Django without a
build step. `config.py` renders the settings the app needs, `csp.py` its Content-Security-Policy.
"""
