"""Django settings of the test identity providers, from the environment the fixture sets.

``IDP_SERVER`` picks the provider, ``IDP_STATE_DIR`` holds the SQLite database and the
ID-token key, ``IDP_ISSUER`` is the gateway's public issuer (what ID tokens must carry),
``IDP_ACCESS_LOG`` is where :mod:`tests.idp.recorder` writes every request it sees.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

SERVER = os.environ["IDP_SERVER"]
STATE_DIR = Path(os.environ["IDP_STATE_DIR"])
ISSUER = os.environ["IDP_ISSUER"]
ACCESS_LOG = os.environ["IDP_ACCESS_LOG"]

SECRET_KEY = "test-only-django-secret-key-not-used-anywhere-else"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "oauth2_provider" if SERVER == "dot" else "oidc_provider",
]
MIDDLEWARE = [
    "tests.idp.recorder.RecordRequests",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "tests.idp.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [Path(__file__).parent / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ]
        },
    }
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": STATE_DIR / "db.sqlite3"}}
# The default PBKDF2 costs a second of a shared core per login; a test user needs none.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGIN_URL = "/accounts/login/"
LOGGING = {"version": 1, "disable_existing_loggers": False}

if SERVER == "dot":
    OAUTH2_PROVIDER = {
        "OIDC_ENABLED": True,
        "OIDC_RSA_PRIVATE_KEY": (STATE_DIR / "oidc-rsa.pem").read_text(),
        "OIDC_ISS_ENDPOINT": ISSUER,
        "PKCE_REQUIRED": True,
        "REQUEST_APPROVAL_PROMPT": "force",
        "SCOPES": {"openid": "OpenID Connect", "profile": "Your profile"},
    }
else:
    # django-oidc-provider's issuer is SITE_URL plus the path it is mounted at (/openid).
    parts = urlsplit(ISSUER)
    SITE_URL = f"{parts.scheme}://{parts.netloc}"
