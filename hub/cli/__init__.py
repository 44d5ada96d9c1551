"""The `incident-hub` command line: the process commands (serve, worker, run) and the operator
commands, one module each under `commands/`.
"""
