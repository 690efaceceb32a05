"""``bauxite serve --workers N``: a supervisor, N gateway workers on one port and one telemetry hub."""
