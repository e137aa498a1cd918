"""Stand-ins for what a pilot does not have yet: cameras, districts, incident feeds, load."""
