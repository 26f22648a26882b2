"""Fakes of external services, faithful to their documented APIs, on 127.0.0.1 (real HTTP)."""
