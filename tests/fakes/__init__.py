"""Fake upstreams: small aiohttp servers that behave as CONTRACTS.md §2 describes."""
