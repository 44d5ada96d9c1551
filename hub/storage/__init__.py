"""Everything that touches Redis: the key layout (`keys`, the only module that names keys), the
event store, incidents, the worker's atomic batches, rate limits, connections, the embedded
server and the one-shot upgrades.
"""
