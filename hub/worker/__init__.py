"""The arq worker: the job functions, the processor that plans and runs an event's actions,
timers, and the one retry / backoff / dead-letter mechanism for outbound calls.
"""
