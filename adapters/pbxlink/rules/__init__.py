"""The CRM rules: typed call view, facts, actions and the pure planner (no I/O)."""
