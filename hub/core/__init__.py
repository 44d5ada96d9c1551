"""The shared core every part uses: the normalised event model, settings, metrics, the connector
registry, text safety (escaping, scrubbing) and the event loop choice.
"""
