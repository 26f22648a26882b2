"""The CRM side of pbxlink: typed call view, pure planner, rules, embedded CRM, MQTT adapter."""
