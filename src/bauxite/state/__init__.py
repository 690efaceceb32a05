"""State shared between gateway replicas (``state:`` config): in process by default, or Redis/Valkey."""
