"""The signed generic webhook backend (docs/webhook.md)."""
