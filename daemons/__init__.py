"""Warden's bundled daemons. Each module here may define Daemon subclasses; they are found at start."""
