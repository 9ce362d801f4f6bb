"""Create the provider's database, its test user and its clients, then exit.

Run as ``python -m tests.idp.provision`` with the settings' environment and
``IDP_CLIENTS``: a JSON list of ``{"client_id", "client_secret", "redirect_uris"}``.
"""

from __future__ import annotations

import json
import os

import django
from django.conf import settings
from django.core.management import call_command

USERNAME = "alice"
PASSWORD = "alice-password-1"


def provision_dot(clients: list[dict[str, str | list[str]]]) -> None:
    """django-oauth-toolkit: confidential authorization-code applications, RS256 ID
    tokens, consent never skipped."""
    from oauth2_provider.models import Application

    for client in clients:
        Application.objects.create(
            name=str(client["client_id"]),
            client_id=str(client["client_id"]),
            client_secret=str(client["client_secret"]),
            client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
            redirect_uris=" ".join(client["redirect_uris"]),
            algorithm=Application.RS256_ALGORITHM,
            skip_authorization=False,
        )


def provision_dop(clients: list[dict[str, str | list[str]]]) -> None:
    """django-oidc-provider: its RSA key, confidential code clients, consent required."""
    from oidc_provider.models import Client, ResponseType, RSAKey

    RSAKey.objects.create(key=(settings.STATE_DIR / "oidc-rsa.pem").read_text())
    code = ResponseType.objects.get(value="code")
    for client in clients:
        created = Client.objects.create(
            name=str(client["client_id"]),
            client_type="confidential",
            client_id=str(client["client_id"]),
            client_secret=str(client["client_secret"]),
            jwt_alg="RS256",
            require_consent=True,
            reuse_consent=False,
        )
        created.redirect_uris = list(client["redirect_uris"])
        created.scope = ["openid", "profile"]
        created.save()
        created.response_types.add(code)


def provision_allauth(clients: list[dict[str, str | list[str]]]) -> None:
    """django-allauth: confidential code clients (secrets hashed by allauth), consent on."""
    from allauth.idp.oidc.models import Client

    for client in clients:
        created = Client(
            id=str(client["client_id"]),
            name=str(client["client_id"]),
            type=Client.Type.CONFIDENTIAL,
            scopes="openid\nprofile",
            skip_consent=False,
        )
        created.set_secret(str(client["client_secret"]))
        created.set_redirect_uris(list(client["redirect_uris"]))
        created.save()


PROVISION = {"dot": provision_dot, "dop": provision_dop, "allauth": provision_allauth}


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.idp.settings")
    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    from django.contrib.auth.models import User

    User.objects.create_user(USERNAME, password=PASSWORD, email="alice@example.com")
    clients = json.loads(os.environ["IDP_CLIENTS"])
    PROVISION[settings.SERVER](clients)


if __name__ == "__main__":
    main()
