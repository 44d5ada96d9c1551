"""Unit tests of hub.storage against a real redis-server (the root conftest starts it)."""
