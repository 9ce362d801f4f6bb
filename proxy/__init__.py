"""jargate: JAR, PAR and JARM in front of a legacy OAuth 2.0 / OpenID Connect server."""

__version__ = "0.1.0"
