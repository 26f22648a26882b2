"""Shared foundation: the layered config loader, the error model, secrets."""
