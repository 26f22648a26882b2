"""The shell toolkit: the I/O pieces every pbxlink process shares.

Above the pure packages (calls, rules, routing, ami, wire, foundation), below the processes
(daemon, adapters). One module per job:

* :mod:`pbxlink.toolkit.reconnect` -- the one reconnect policy (capped, jittered backoff on a
  named set of transient errors);
* :mod:`pbxlink.toolkit.sqlite_schema` -- the one SQLite migration helper (``user_version``);
* :mod:`pbxlink.toolkit.mqtt` -- the one MQTT client factory (TLS, client certificates, auth,
  MQTT 5 properties);
* :mod:`pbxlink.toolkit.http` -- /metrics (prometheus_client), /healthz and /readyz.
"""
