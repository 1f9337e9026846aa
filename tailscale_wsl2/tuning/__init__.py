"""Process tuning, applied by the entry point and the running half, never on import."""
