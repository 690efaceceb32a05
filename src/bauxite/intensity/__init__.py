"""Grid carbon intensity: providers behind one Protocol, background refresh, offline fallback."""
