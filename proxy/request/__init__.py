"""The request side: JAR (RFC 9101) and PAR (RFC 9126) at the authorization endpoint."""
