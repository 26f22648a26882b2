"""The Bitrix24 backend (docs/crm-bitrix24.md)."""
