"""The ``tainted-proxy`` command: serve, demo, classify."""

from __future__ import annotations

import argparse
import sys


def _serve(args: argparse.Namespace) -> int:
    import trio

    from tainted_proxy.app import Proxy
    from tainted_proxy.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
        cfg = cfg.with_overrides(
            listen=args.listen,
            upstream_host=args.upstream_host,
            upstream_port=args.upstream_port,
            max_connections=args.max_connections,
        )
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    from tainted_proxy.logs import configure

    configure(args.log_level or cfg.log.level, args.log_format or cfg.log.format)
    proxy = Proxy(cfg)

    async def main() -> None:
        await proxy.serve()

    try:
        trio.run(main)
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # start-up failures: say what and exit non-zero
        from tainted_proxy.backend.server import UpstreamError

        if isinstance(exc, UpstreamError | OSError):
            print(f"tainted-proxy: {exc}", file=sys.stderr)
            return 1
        raise
    return 0


def _demo(args: argparse.Namespace) -> int:
    from tainted_proxy.demo import run_demo

    return run_demo(args)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "classify":
        from tainted_proxy.classify import main as classify_main

        return classify_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="tainted-proxy",
        description="A session-aware MySQL/MariaDB connection-pooling proxy.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", "-c", required=True, help="TOML configuration file")
    serve.add_argument("--listen", help="override proxy.listen (host:port)")
    serve.add_argument("--upstream-host", help="override upstream.host")
    serve.add_argument("--upstream-port", type=int, help="override upstream.port")
    serve.add_argument("--max-connections", type=int, help="override upstream.max_connections")
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
    serve.set_defaults(func=_serve)
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
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
