"""The arq worker: the job functions (app), and the processor that plans (planner), runs
(executor, steps), times (timers) and records (recording, claims) an event's actions, with
the one retry / backoff / dead-letter mechanism for outbound calls (actions).
"""
