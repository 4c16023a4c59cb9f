"""Command line.

    crankshaft-exporter [run] [--config FILE] [--listen HOST:PORT] [--interval SECONDS]
                        [--log-level LEVEL] [--log-format FORMAT] [--target KIND:VALUE]
                        [--web.config.file FILE]
    crankshaft-exporter check-config [FILE] [--web.config.file FILE]
    crankshaft-exporter default-config
    crankshaft-exporter alert-rules [--config FILE] [--job NAME] [--runbook-base URL]
    crankshaft-exporter --version

Every failure a user can cause ends with one clear line per problem on stderr and a
non-zero exit: 2 for usage, 78 (EX_CONFIG) for an invalid configuration, 1 otherwise.
"""

from __future__ import annotations

import argparse
import signal
import sys

from exporter import __version__

EX_USAGE = 2
EX_CONFIG = 78
COMMANDS = ("run", "check-config", "default-config", "alert-rules")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crankshaft-exporter",
        description="The Crankshaft Performance Monitoring System as a Prometheus exporter.\n"
        "With no COMMAND it runs the daemon: `crankshaft-exporter --target name:crankshaft`\n"
        "is `crankshaft-exporter run --target name:crankshaft`.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run the daemon (the default command)")
    run.add_argument("--config", metavar="FILE", help="YAML config (default: built-in defaults)")
    run.add_argument("--listen", metavar="HOST:PORT", help="address to serve on (default :9001)")
    run.add_argument(
        "--interval",
        metavar="SECONDS",
        help="collection interval: seconds or a duration such as 30s, 1m",
    )
    run.add_argument(
        "--log-level",
        metavar="LEVEL",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="DEBUG, INFO (default), WARNING, ERROR or CRITICAL",
    )
    run.add_argument(
        "--log-format",
        choices=["auto", "text", "json", "journal"],
        help="auto (default): journald's fields under systemd, else text on stderr",
    )
    run.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="exporter-toolkit web config (TLS, basic auth), as node_exporter reads it",
    )
    run.add_argument(
        "--target",
        metavar="KIND:VALUE",
        help="the process to watch, as target: in the file: self, pid:1234, "
        "pidfile:/run/x.pid, name:crankshaft, cmdline:REGEX, systemd_unit:x.service, none",
    )
    parser.epilog = _run_options_help(run)
    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file", metavar="FILE", nargs="?")
    check.add_argument(
        "--web.config.file", dest="web_config_file", metavar="FILE",
        help="also (or only) validate this web config file",
    )
    check.add_argument(
        "--explain", action="store_true",
        help="also list each source: whether it runs, what it reads, its options' values "
        "and what they mean",
    )
    check.set_defaults(usage_error=check.error)  # usage line + exit 2, as argparse's own
    sub.add_parser("default-config", help="print the default config, every key commented")
    rules = sub.add_parser(
        "alert-rules", help="print Prometheus alerting rules equal to the configured alerts"
    )
    rules.add_argument("--config", metavar="FILE", help="YAML config (default: built-in)")
    rules.add_argument(
        "--job",
        default="crankshaft",
        help="Prometheus job name of the exporters, for the offline rules (default: crankshaft)",
    )
    rules.add_argument(
        "--runbook-base",
        metavar="URL",
        default="README.md",
        help="where README.md is published; runbook_url is URL#alert-name (default: README.md)",
    )
    return parser


def _run_options_help(run: argparse.ArgumentParser) -> str:
    """The run command's options, shown by the top-level --help too: running is what a
    newcomer wants, and ``crankshaft-exporter --listen ...`` means ``run --listen ...``."""
    formatter = run._get_formatter()
    formatter.start_section("run options (COMMAND run is the default)")
    formatter.add_arguments([a for a in run._actions if a.option_strings and a.dest != "help"])
    formatter.end_section()
    return formatter.format_help()


def _print_problems(problems: list[str]) -> None:
    for line in problems:
        print(line, file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the daemon handles it (imports first)
    from exporter.config import ConfigError
    from exporter.daemon import Daemon, Overrides, StartupError

    overrides = Overrides(
        args.listen, args.interval, args.log_level, args.log_format, args.web_config_file,
        target=args.target,
    )
    try:
        daemon = Daemon(args.config, overrides)
    except ConfigError as e:
        _print_problems(e.problems)
        print("crankshaft-exporter: invalid configuration, not starting", file=sys.stderr)
        return EX_CONFIG
    except StartupError as e:
        print(f"crankshaft-exporter: {e}", file=sys.stderr)
        return 1
    return daemon.run()


def cmd_check_config(args: argparse.Namespace) -> int:
    from exporter.config import Config, ConfigError, load_config
    from exporter.config.default import explain
    from exporter.http.webconfig import load_web_config

    if args.file is None and args.web_config_file is None:
        args.usage_error("give FILE, --web.config.file FILE or both")
    problems: list[str] = []
    for path, load in ((args.file, load_config), (args.web_config_file, load_web_config)):
        if path is None:
            continue
        try:
            loaded = load(path)
        except ConfigError as e:
            problems += e.problems
        else:
            print(f"{path}: valid")
            if args.explain and isinstance(loaded, Config):
                sys.stdout.write(explain(loaded))
    if problems:
        _print_problems(problems)
        return EX_CONFIG
    return 0


def cmd_default_config(args: argparse.Namespace) -> int:
    from exporter.config import default_config_text

    sys.stdout.write(default_config_text())
    return 0


def cmd_alert_rules(args: argparse.Namespace) -> int:
    from exporter.config import Config, ConfigError, load_config
    from exporter.promrules import render_rules

    try:
        config = Config.default() if args.config is None else load_config(args.config)
    except ConfigError as e:
        _print_problems(e.problems)
        return EX_CONFIG
    sys.stdout.write(render_rules(config.alerts, config.interval, args.job, args.runbook_base))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv = ["run", *argv]  # `crankshaft-exporter --listen ...` means run
    args = build_parser().parse_args(argv)
    handlers = {
        "run": cmd_run,
        "check-config": cmd_check_config,
        "default-config": cmd_default_config,
        "alert-rules": cmd_alert_rules,
    }
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `crankshaft-exporter default-config | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
