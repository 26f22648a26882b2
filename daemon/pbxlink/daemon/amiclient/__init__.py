"""The AMI shell: the hardened panoramisk client, its reconnect loop, the session recorder."""
