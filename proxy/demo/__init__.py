"""``jargate demo``: a bundled legacy server, the gateway in front of it, one flow shown."""
