import sys

try:
    from hub.cli.main import main

    sys.exit(main())
except KeyboardInterrupt:  # Ctrl-C before the command's own handlers are in place: one line, no traceback
    print("incident-hub: interrupted", file=sys.stderr)
    sys.exit(130)
