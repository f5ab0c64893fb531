"""What one run leaves on a store: its observation and status, its record formats,
metrics, tags and notes, heartbeats, and the context of the run in progress."""
