"""The HTTP edge: routes on port 9001 over the stdlib threading server."""
