"""Command line: ``serve``, ``check-config``, ``resolve``. Commands only; the logic lives elsewhere.

Exit codes are the contract of shared/config.md: 0 fine; 1 bad configuration (``serve``,
``check-config``) or refused (``resolve``); 2 bad usage (and a bad configuration for ``resolve``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from mda import __version__
from mda.addresses import AddressError, parse_mailbox
from mda.config import Config, load, to_plain
from mda.policy import Policy
from mda.yamlsource import ConfigError

EXIT_OK = 0
EXIT_CONFIG = 1
EXIT_USAGE = 2


def _load_or_report(path: Path | None) -> Config | None:
    try:
        return load(path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return None


def cmd_serve(args: argparse.Namespace) -> int:
    from mda.app import serve

    config = _load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    try:
        return serve(config)
    except OSError as error:
        print(f"mda: cannot start: {error}", file=sys.stderr)
        return EXIT_CONFIG


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    if args.print:
        sys.stdout.write(yaml.safe_dump(to_plain(config), sort_keys=False, allow_unicode=True))
    else:
        print(f"{args.config or '<default>'}: ok")
    return EXIT_OK


def cmd_resolve(args: argparse.Namespace) -> int:
    config = _load_or_report(args.config)
    if config is None:
        return EXIT_USAGE
    try:
        address = parse_mailbox(args.address)
    except AddressError as error:
        print(f"address: {args.address!r}: {error}")
        print("reply: 501 5.1.3 Bad address syntax")
        return EXIT_CONFIG
    resolution = Policy(config).resolve(address, smtputf8=not address.is_ascii)
    print(f"address: {resolution.address}")
    for step in resolution.steps:
        print(f"  {step}")
    print(f"reply: {resolution.reply}")
    return EXIT_OK if resolution.accepted else EXIT_CONFIG


def cmd_deliver(args: argparse.Namespace) -> int:
    """LDA mode (mda/lda.py): sysexits codes, one status line per recipient on standard output."""
    from mda.lda import run

    return run(args.config, args.sender, args.recipients, stdin=sys.stdin.buffer, stdout=sys.stdout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mda", description="Mail delivery agent (LMTP/SMTP → Maildir/mbox)")
    parser.add_argument("--version", action="version", version=f"mda {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--config", type=Path, help="configuration file (default: the embedded one)")
    serve.set_defaults(func=cmd_serve)

    check = commands.add_parser("check-config", help="validate a configuration")
    check.add_argument("--config", type=Path)
    check.add_argument("--print", action="store_true", help="print the effective configuration")
    check.set_defaults(func=cmd_check_config)

    resolve = commands.add_parser("resolve", help="explain where an address is delivered")
    resolve.add_argument("--config", type=Path)
    resolve.add_argument("address")
    resolve.add_argument("--size", type=int, help="message size, as the SIZE parameter would say")
    resolve.set_defaults(func=cmd_resolve)

    deliver = commands.add_parser("deliver", help="LDA mode: deliver one message read from standard input")
    deliver.add_argument("--config", type=Path)
    deliver.add_argument("-f", "--from", dest="sender", default="", help='envelope sender ("" = null sender)')
    deliver.add_argument("recipients", nargs="+", metavar="RECIPIENT")
    deliver.set_defaults(func=cmd_deliver)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return EXIT_USAGE if exit_.code else EXIT_OK
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
