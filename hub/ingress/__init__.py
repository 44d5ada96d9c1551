"""The way in: the aiohttp app that verifies a webhook on its raw bytes, records and queues it in one
Redis round trip and answers 202; plus health, readiness and metrics, and the HTTP server itself.
"""
