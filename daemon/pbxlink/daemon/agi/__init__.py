"""FastAGI server for routing: `agi://127.0.0.1:4573/route` answered within a hard deadline."""
