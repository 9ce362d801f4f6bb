"""The token endpoint guard (``JARGATE_TOKEN_PATH``): what a legacy token endpoint does not
check, checked before it sees the request (:mod:`.endpoint`)."""
