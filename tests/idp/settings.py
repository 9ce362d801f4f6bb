"""Django settings of the test identity providers, from the environment the fixture sets.

``IDP_SERVER`` picks the provider (``dot``: django-oauth-toolkit, ``dop``:
django-oidc-provider, ``allauth``: django-allauth's OpenID provider), ``IDP_STATE_DIR``
holds the SQLite database and the ID-token key, ``IDP_ISSUER`` is the gateway's public
issuer (what ID tokens must carry), ``IDP_ACCESS_LOG`` is where
:mod:`tests.idp.recorder` writes every request it sees.
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

PROVIDER_APPS = {
    "dot": ["oauth2_provider"],
    "dop": ["oidc_provider"],
    "allauth": ["allauth", "allauth.account", "allauth.idp.oidc"],
}
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    *PROVIDER_APPS[SERVER],
]
MIDDLEWARE = [
    "tests.idp.recorder.RecordRequests",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
if SERVER == "allauth":
    MIDDLEWARE.append("allauth.account.middleware.AccountMiddleware")
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
elif SERVER == "dop":
    # django-oidc-provider's issuer is SITE_URL plus the path it is mounted at (/openid).
    parts = urlsplit(ISSUER)
    SITE_URL = f"{parts.scheme}://{parts.netloc}"
else:
    # django-allauth's issuer is the request's origin (the Host the gateway passes on).
    IDP_OIDC_PRIVATE_KEY = (STATE_DIR / "oidc-rsa.pem").read_text()
    ACCOUNT_LOGIN_METHODS = {"username"}
    ACCOUNT_SIGNUP_FIELDS = ["username*", "password1*", "password2*"]
    ACCOUNT_EMAIL_VERIFICATION = "none"
    ACCOUNT_RATE_LIMITS = False
    AUTHENTICATION_BACKENDS = ["allauth.account.auth_backends.AuthenticationBackend"]
