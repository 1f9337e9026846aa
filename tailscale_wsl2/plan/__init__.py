"""Planning: what a half will do, decided from options and look-ups, before anything runs."""
