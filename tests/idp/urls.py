"""The provider's routes and django.contrib.auth's login form."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.views import LoginView
from django.urls import include, path

urlpatterns = [path("accounts/login/", LoginView.as_view(), name="login")]
if settings.SERVER == "dot":
    urlpatterns.append(path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")))
else:
    urlpatterns.append(path("openid/", include("oidc_provider.urls", namespace="oidc_provider")))
