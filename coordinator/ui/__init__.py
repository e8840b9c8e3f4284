"""The web dashboard: static files (static/) the coordinator serves at /ui/ (routes.py), with
the headers that keep them to their own origin (headers.py)."""
