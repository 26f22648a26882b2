"""The RetailCRM (Simla.com) API v5 backend: settings, request payloads (pure), the backend."""
