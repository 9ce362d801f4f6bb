"""The response side: completing flows and answering the client (JARM)."""
