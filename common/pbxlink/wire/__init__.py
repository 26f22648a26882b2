"""The wire model: what crosses MQTT between pbxlink processes (pure, no I/O)."""
