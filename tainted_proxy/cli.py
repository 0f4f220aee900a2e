"""The ``tainted-proxy`` command: serve, check, demo, classify (and what other modules add)."""

from __future__ import annotations

import argparse
import sys


def _serve(args: argparse.Namespace) -> int:
    import trio

    from tainted_proxy.app import Proxy
    from tainted_proxy.config import Config, ConfigError, load_config
    from tainted_proxy.logs import configure
    from tainted_proxy.peers import WorkerRole

    def overrides(cfg: Config) -> Config:
        return cfg.with_overrides(
            listen=args.listen,
            upstream_host=args.upstream_host,
            upstream_port=args.upstream_port,
            max_connections=args.max_connections,
            workers=args.workers,
        )

    try:
        cfg = overrides(load_config(args.config))
        if args.fail_fast:
            cfg = cfg.model_validate(
                {**cfg.model_dump(), "upstream": {**cfg.upstream.model_dump(), "fail_fast": True}}
            )
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    role = None
    if args.worker_index is not None:
        role = WorkerRole(
            args.worker_index, args.worker_count, args.worker_shared, args.worker_parent
        )
    configure(
        args.log_level or cfg.log.level,
        args.log_format or cfg.log.format,
        worker=None if role is None else role.index,
    )
    if role is None and cfg.proxy.workers > 1:
        from tainted_proxy.workers import supervise

        return supervise(args.argv, cfg.proxy.listen, cfg.proxy.workers)
    proxy = Proxy(cfg, config_path=args.config, reconfigure=overrides, worker=role)

    async def main() -> None:
        await proxy.serve(handle_signals=True)

    try:
        trio.run(main)
    except KeyboardInterrupt:  # a signal before the handlers were installed
        return 0
    except Exception as exc:  # start-up failures: say what and exit non-zero
        from tainted_proxy.backend.server import UpstreamError

        if isinstance(exc, UpstreamError | OSError):
            print(f"tainted-proxy: {exc}", file=sys.stderr)
            return 1
        raise
    return 0


def _check(args: argparse.Namespace) -> int:
    """Validate a configuration file (and, with --upstream, every user's upstream login)."""
    from tainted_proxy.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{args.config}: valid ({len(cfg.users)} users)")
    if not args.upstream:
        return 0
    import trio

    from tainted_proxy.app import Proxy

    proxy = Proxy(cfg)
    failed = 0

    async def try_logins() -> None:
        nonlocal failed
        from tainted_proxy.app import check_upstream_login

        for name in cfg.users:
            error = await check_upstream_login(proxy, name)
            login, _ = proxy.upstream_credentials(name)
            if error is None:
                print(f"user {name}: upstream login {login!r} ok")
            else:
                failed += 1
                print(f"user {name}: upstream login {login!r} FAILED: {error}")

    trio.run(try_logins)
    return 1 if failed else 0


def _demo(args: argparse.Namespace) -> int:
    from tainted_proxy.demo import run_demo

    return run_demo(args)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tainted-proxy")
    except PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "classify":
        from tainted_proxy.classify import main as classify_main

        return classify_main(argv[1:])
    if argv and argv[0] == "analyze":
        from tainted_proxy.analyze import main as analyze_main

        return analyze_main(argv[1:])
    if argv and argv[0] == "report":
        from tainted_proxy.admin.report_cli import main as report_main

        return report_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="tainted-proxy",
        description="A session-aware MySQL/MariaDB connection-pooling proxy.",
    )
    parser.add_argument("--version", action="version", version=f"tainted-proxy {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", "-c", required=True, help="TOML configuration file")
    serve.add_argument("--listen", help="override proxy.listen (host:port)")
    serve.add_argument("--upstream-host", help="override upstream.host")
    serve.add_argument("--upstream-port", type=int, help="override upstream.port")
    serve.add_argument("--max-connections", type=int, help="override upstream.max_connections")
    serve.add_argument(
        "--workers",
        type=int,
        help="override proxy.workers: worker processes sharing the port and the upstream "
        "budget (1..64, default 1)",
    )
    # set by the parent of --workers N on each worker's command line (tainted_proxy.workers)
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-count", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-shared", help=argparse.SUPPRESS)
    serve.add_argument("--worker-parent", type=int, help=argparse.SUPPRESS)
    serve.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="override [log] level (default: info)",
    )
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="override [log] format: key=value text lines (default) or JSON lines",
    )
    serve.add_argument(
        "--fail-fast",
        action="store_true",
        help="exit 1 if the upstream cannot be reached at start (default: start, retry)",
    )
    serve.set_defaults(func=_serve)
    check = sub.add_parser("check", help="validate a configuration file without serving")
    check.add_argument("--config", "-c", required=True, help="TOML configuration file")
    check.add_argument(
        "--upstream", action="store_true", help="also try every user's upstream login"
    )
    check.set_defaults(func=_check)
    demo = sub.add_parser(
        "demo", help="run the proxy against a throwaway MariaDB and show it working"
    )
    demo.add_argument("--processes", type=int, default=4, help="app processes (default: 4)")
    demo.add_argument(
        "--pool-size",
        type=int,
        default=10,
        help="client connections per app process (its SQLAlchemy pool_size; default: 10)",
    )
    demo.add_argument(
        "--seconds", type=float, default=3.0, help="seconds of work per process (default: 3)"
    )
    demo.set_defaults(func=_demo)
    sub.add_parser("classify", help="classify SQL statements (see `tainted-proxy classify --help`)")
    sub.add_parser(
        "analyze",
        help="report how a general query log's sessions would pool (see `tainted-proxy "
        "analyze --help`)",
    )
    sub.add_parser(
        "report",
        help="show a running proxy's pools, sessions and taint ledger (see `tainted-proxy "
        "report --help`)",
    )
    args = parser.parse_args(argv)
    args.argv = argv  # serve --workers N starts its workers with the same arguments
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
