"""The provider's routes and its login form (django.contrib.auth's, or allauth's own)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.views import LoginView
from django.urls import include, path

if settings.SERVER == "dot":
    urlpatterns = [
        path("accounts/login/", LoginView.as_view(), name="login"),
        path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    ]
elif settings.SERVER == "dop":
    urlpatterns = [
        path("accounts/login/", LoginView.as_view(), name="login"),
        path("openid/", include("oidc_provider.urls", namespace="oidc_provider")),
    ]
else:
    # django-allauth's own login form; its provider at the root (discovery, JWKS).
    urlpatterns = [
        path("accounts/", include("allauth.urls")),
        path("", include("allauth.idp.urls")),
    ]
