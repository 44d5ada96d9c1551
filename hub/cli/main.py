"""`incident-hub` command line: serve, worker, run, and the operator commands.

Each operator command lives in its own module and registers itself through
`COMMAND_MODULES`; this file only wires processes and settings.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from hub.core.settings import Settings, SettingsError, load_settings

#: Modules with `register(subparsers)` adding more subcommands.
COMMAND_MODULES: tuple[str, ...] = ("hub.cli.commands",)


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as e:
        print(f"incident-hub: bad configuration: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def with_redis(settings: Settings) -> Settings:
    """Settings with REDIS_URL filled in: the embedded Redis when it is unset."""
    if settings.redis_url:
        return settings
    from hub.storage.embedded_redis import ensure_daemon

    url = ensure_daemon(settings.hub_data_dir)
    print(f"incident-hub: REDIS_URL unset, using the embedded Redis at {url}", file=sys.stderr)
    return settings.model_copy(update={"redis_url": url})


def _logging() -> None:
    logging.basicConfig(level=os.environ.get("HUB_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


def cmd_serve(args: argparse.Namespace) -> int:
    from hub.core import loop
    from hub.ingress.app import create_app
    from hub.ingress.serving import ListenError, serve

    settings = with_redis(_settings())
    _logging()
    loop.install()
    host = args.host or settings.hub_host
    port = args.port or settings.hub_port
    from hub.cli.summary import startup_summary

    summary = startup_summary(settings)

    def ready() -> None:
        print(f"incident-hub: serving on http://{host}:{port}", file=sys.stderr)
        print(summary, file=sys.stderr)

    try:
        serve(create_app(settings), host, port, header_timeout=settings.hub_header_timeout,
              reuse_port=settings.hub_reuse_port, on_ready=ready)
    except ListenError as e:
        hint = "" if settings.hub_reuse_port else " (HUB_REUSE_PORT=1 lets several serve processes share a port)"
        print(f"incident-hub: {e}{hint}", file=sys.stderr)
        return 1
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from hub.cli.summary import startup_summary
    from hub.core import loop
    from hub.worker.app import run_worker

    settings = with_redis(_settings())
    _logging()
    loop.install()
    print(startup_summary(settings, admin=False).replace("incident-hub:", "incident-hub worker:", 1),
          file=sys.stderr)
    run_worker(settings)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Everything in one terminal: embedded Redis (unless REDIS_URL), web process(es), worker(s)."""
    if args.web < 1 or args.workers < 0:
        print("incident-hub: --web must be at least 1 and --workers at least 0", file=sys.stderr)
        return 2
    settings = _settings()
    from hub.rules import RulesError, load_rules

    try:  # the workers would refuse these rules: say so before starting anything
        load_rules(settings.rules_path())
    except RulesError as e:
        print(f"incident-hub: not starting: the rules file is invalid:\n{e.report()}", file=sys.stderr)
        return 1
    env = dict(os.environ)
    redis = None
    if not settings.redis_url:
        from hub.storage.embedded_redis import EmbeddedRedis, running, socket_path, start_lock

        # One server per data dir: it also listens on the data dir's socket, where CLI
        # commands in another terminal look for it (a second server would share the AOF).
        with start_lock(settings.hub_data_dir):
            url = running(settings.hub_data_dir)
            if url is None:
                redis = EmbeddedRedis(settings.hub_data_dir / "redis", port=args.redis_port, own_session=True,
                                      unix_socket=socket_path(settings.hub_data_dir)).start()
                url = redis.url
                print(f"incident-hub: embedded Redis on {url} (AOF in {redis.dir})", file=sys.stderr)
            else:
                print(f"incident-hub: using the embedded Redis already running at {url}", file=sys.stderr)
        env["REDIS_URL"] = url
    if args.web > 1:  # the web processes share one port; the kernel spreads connections over them
        env["HUB_REUSE_PORT"] = "1"
    exe = [sys.executable, "-m", "hub"]
    # Own process groups: a terminal's Ctrl-C reaches only this process, which passes one
    # signal on; a child signalled twice (by the terminal and by us) cut its shutdown short.
    children = [subprocess.Popen([*exe, "serve"], env=env, process_group=0) for _ in range(args.web)]
    children += [subprocess.Popen([*exe, "worker"], env=env, process_group=0) for _ in range(args.workers)]
    stopping = False
    failed = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        if stopping:
            return  # once: a second Ctrl-C must not cut the children's shutdown short
        stopping = True
        # Ignored from now on, not only handled: Python resets a handled signal to its default
        # as it exits, so a second Ctrl-C landing then would kill this process (exit -2) after
        # a clean stop. An ignored one stays ignored.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        for c in children:
            if c.poll() is None:
                c.send_signal(signal.SIGTERM if signum == signal.SIGTERM else signal.SIGINT)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, lambda _s, f: stop(signal.SIGTERM, f))  # the terminal closed: stop them too
    try:
        while not stopping and all(c.poll() is None for c in children):
            time.sleep(0.2)
        if not stopping:
            print("incident-hub: a process exited; stopping the others", file=sys.stderr)
            failed = True
            stop(signal.SIGTERM, None)
        for c in children:
            try:
                c.wait(timeout=30)
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait()
    finally:
        if redis:
            redis.stop()
    print("incident-hub: stopped", file=sys.stderr)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="incident-hub",
        description="Self-hosted integration hub for incident webhooks. Configuration comes from the "
                    "environment (and .env); see README.md and docs/DESIGN.md.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the webhook ingress and admin API (HUB_HOST:HUB_PORT; "
                                     "HUB_REUSE_PORT=1 lets several processes share the port)")
    p.add_argument("--host", help="listen address (default HUB_HOST, 0.0.0.0)")
    p.add_argument("--port", type=int, help="listen port (default HUB_PORT, 8080)")
    p.set_defaults(fn=cmd_serve)

    p = sub.add_parser("worker", help="run a worker process (arq) that performs the actions")
    p.set_defaults(fn=cmd_worker)

    p = sub.add_parser("run", help="start embedded Redis (if REDIS_URL is unset), the web process(es) and workers")
    p.add_argument("--web", type=int, default=1,
                   help="web processes (default 1); more than one share HUB_PORT through SO_REUSEPORT")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--redis-port", type=int, default=None, help="embedded Redis port (default: a free one)")
    p.set_defaults(fn=cmd_run)

    for name in COMMAND_MODULES:
        register: Callable[[argparse._SubParsersAction], None] = importlib.import_module(name).register
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C outside a process's own signal handling (start-up, shutdown)
        print("incident-hub: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
