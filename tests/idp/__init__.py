"""Real identity providers for the interop suite: a small Django project that runs
django-oauth-toolkit (``IDP_SERVER=dot``) or django-oidc-provider (``IDP_SERVER=dop``)
under gunicorn, each with its login form and consent page (:mod:`tests.idp.process`)."""
