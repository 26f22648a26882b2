"""The AMI edge: byte framing (pure), the hardened panoramisk client, the session recorder.

The tracker side of AMI (typed events, decoding) lives beside it in ``events`` and ``decode``.
"""
