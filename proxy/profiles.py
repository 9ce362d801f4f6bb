"""Profiles: the rule sets ``JARGATE_PROFILE`` (or a client's ``profile``) switches on.

``oauth2`` is the gateway's own rules. ``fapi2`` adds what the FAPI 2.0 Security Profile
(final, section 5.3.2) asks of an authorization server: PKCE with S256, codes that live
60 s. ``fapi2-message-signing`` adds FAPI 2.0 Message Signing. One :class:`Policy` per
client says which rules hold for it, so each rule reads one flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .algorithms import FAPI2_SIGNING_ALGS, SIGNING_ALGS

if TYPE_CHECKING:
    from .clients import RegisteredClient
    from .settings import Profile, Settings

#: A delivered code's lifetime at the token endpoint, by profile (FAPI 2.0 SP §5.3.2.1).
CODE_LIFETIME = {"oauth2": 600, "fapi2": 60, "fapi2-message-signing": 60}


@dataclass(frozen=True, slots=True)
class Policy:
    """The rules that hold for one client."""

    profile: Profile
    #: An S256 ``code_challenge`` is required at the authorization and PAR endpoints.
    require_pkce: bool
    #: How long a code the gateway delivered may be redeemed through it, in seconds.
    code_lifetime: int

    @property
    def fapi2(self) -> bool:
        """True under either FAPI 2.0 profile: PAR, ``response_type=code``, a redirect URI,
        PS256/ES256/EdDSA, strong keys, the issuer as a client assertion's ``aud``."""
        return self.profile != "oauth2"

    @property
    def message_signing(self) -> bool:
        """FAPI 2.0 Message Signing: signed request objects at PAR, JARM responses."""
        return self.profile == "fapi2-message-signing"

    @property
    def signing_algs(self) -> tuple[str, ...]:
        """The algorithms request objects and client assertions may be signed with."""
        return FAPI2_SIGNING_ALGS if self.fapi2 else SIGNING_ALGS


def policy_of(settings: Settings, client: RegisteredClient | None) -> Policy:
    """The client's profile (its own, else ``JARGATE_PROFILE``) and what follows from it;
    ``require_pkce`` is the client's, else the setting's, else the profile's."""
    meta = client.meta if client is not None else None
    profile = (meta.profile if meta is not None else None) or settings.profile
    fapi2 = profile != "oauth2"
    own = meta.require_pkce if meta is not None else None
    require_pkce = fapi2 or bool(own if own is not None else settings.require_pkce)
    default = CODE_LIFETIME[profile]
    lifetime = settings.code_lifetime_seconds or default
    # Under FAPI 2.0 a longer lifetime set for oauth2 clients does not apply.
    return Policy(profile, require_pkce, min(lifetime, default) if fapi2 else lifetime)
