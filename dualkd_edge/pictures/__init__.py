"""Pictures for people: anomaly-map scale, overlays, and the optional matplotlib backend."""
