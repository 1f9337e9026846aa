"""Running a planned half: listeners, the relay, the link, until a signal ends it."""
