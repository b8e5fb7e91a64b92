"""Command line: ``serve``, ``check-config``, ``resolve``, ``deliver``, ``sieve-check``. Commands only.

``resolve``, ``check-config`` and ``sieve-check`` only explain: they write nothing (no ``maildirsize``
rebuild, no directory, no state file), so running them as root leaves the mail tree as it was.

Exit codes are the contract of README's command table ("A short tour"): 0 fine; 1 bad configuration
(``serve``,
``check-config``) or refused (``resolve``); 2 bad usage (and a bad configuration for ``resolve``);
``deliver`` speaks sysexits, with 75 (retry) for anything temporary, a bad configuration or command line
included.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from mda import __version__, logs
from mda.addresses import AddressError, parse_mailbox
from mda.config import NO_LISTENERS, Config, load, load_for_serve, to_document
from mda.lda import EX_TEMPFAIL
from mda.policy import Policy
from mda.yamlsource import ConfigError

EXIT_OK = 0
EXIT_CONFIG = 1
EXIT_USAGE = 2


def _load_or_report(path: Path | None, loader: Callable[[Path | None], Config] = load) -> Config | None:
    try:
        return loader(path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return None


def _unworkable(config: Config, source: Path | None) -> bool:
    """Report settings this process could not carry out (mda/privileges.py); True when there are any."""
    from mda.privileges import problems

    found = problems(config)
    for problem in found:
        print(f"{source or '<default>'}: {problem}", file=sys.stderr)
    return bool(found)


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load_or_report(args.config, load_for_serve)
    if config is None or _unworkable(config, args.config):
        return EXIT_CONFIG
    from mda.serving import serve

    try:
        return serve(config)
    except (OSError, LookupError) as error:  # an address in use, an unsafe socket path, an unknown user
        print(f"mda: cannot start: {error}", file=sys.stderr)
        return EXIT_CONFIG


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load_or_report(args.config)
    if config is None or _unworkable(config, args.config):
        return EXIT_CONFIG
    if problems := _start_problems(config):
        for problem in problems:
            print(f"{args.config or '<default>'}: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    if args.print:
        sys.stdout.write(yaml.safe_dump(to_document(config), sort_keys=False, allow_unicode=True))
    else:
        print(f"{args.config or '<default>'}: ok")
    if not config.listeners:
        print(f"{args.config or '<default>'}: note: no listeners: {NO_LISTENERS}", file=sys.stderr)
    if args.connect:
        userdb_answers, state_opens = _connect_userdb(config), _connect_state(config)
        if not (userdb_answers and state_opens):
            return EXIT_CONFIG
    if args.against is not None:
        old = _load_or_report(args.against)
        if old is None:
            return EXIT_CONFIG
        for line in destination_changes(old, config):
            print(line)
    return EXIT_OK


def _connect_userdb(config: Config) -> bool:
    """Ask each ``userdb`` source once (``check-config --connect``); False when one cannot answer."""
    from mda.userdb import Userdb

    try:
        userdb = Userdb(config.userdb)
    except OSError as error:  # a source's password file (the message names the source and the file)
        print(f"{error.strerror or error}")
        return False
    try:
        results = userdb.check()
    finally:
        userdb.close()
    for label, problem in results:
        print(f"userdb {label}: {problem or 'ok'}")
    return all(problem is None for _, problem in results)


def _connect_state(config: Config) -> bool:
    """Open the ``state:`` store once (``check-config --connect``), creating nothing; False when it fails."""
    from mda.state import state_dir
    from mda.statestore import check

    label, problem = check(config.state, state_dir(config))
    print(f"state {label}: {problem or 'ok'}")
    return problem is None


def _start_problems(config: Config) -> list[str]:
    """What would stop ``serve``: TLS files the service user cannot load, as that user (mda.tls)."""
    from mda.binding import service_identity
    from mda.tls import unreadable_files_as

    try:
        return unreadable_files_as(config, service_identity(config))
    except LookupError as error:
        return [str(error)]


def _destination(policy: Policy, address: str) -> tuple[str, tuple[str, ...]]:
    """The reply code and the mailboxes an address reaches under one configuration."""
    resolution = policy.resolve(parse_mailbox(address), smtputf8=True)
    where = tuple(sorted(f"{m.format}:{m.path}" + (f" .{m.folder}" if m.folder else "") for m in resolution.mailboxes))
    return f"{resolution.reply.code} {resolution.reply.enhanced}", where


def destination_changes(old: Config, new: Config) -> list[str]:
    """Every address named in either configuration (users and alias sources, not catch-alls) whose
    destination differs: ``changed ADDRESS: OLD -> NEW`` or ``unknown ADDRESS: was OLD``.

    Run before a reload so an operator sees which mail would go elsewhere or bounce from now on.
    """
    old_policy, new_policy = Policy(old), Policy(new)
    known = {a for c in (old, new) for a in (*c.users, *c.aliases) if not a.startswith("@")}
    lines = []
    for address in sorted(known):
        before, after = _destination(old_policy, address), _destination(new_policy, address)
        if before == after:
            continue
        was = ", ".join(before[1]) or before[0]
        if before[1] and not after[1]:
            lines.append(f"unknown {address}: was {was}, now {after[0]}")
        else:
            lines.append(f"changed {address}: {was} -> {', '.join(after[1]) or after[0]}")
    if not lines:
        lines.append("no known address changes destination")
    return lines


def cmd_resolve(args: argparse.Namespace) -> int:
    """Explain, step by step, what mda would answer at RCPT for one address (exit 0 deliverable, 1 not)."""
    from mda.space import check_capacity

    config = _load_or_report(args.config)
    if config is None:
        return EXIT_USAGE
    if args.size is not None and args.size < 0:
        print("mda resolve: --size must be 0 or more", file=sys.stderr)
        return EXIT_USAGE
    try:
        address = parse_mailbox(args.address)
    except AddressError as error:
        print(f"address: {args.address!r}: {error}")
        print("reply: 501 5.1.3 Bad address syntax")
        return EXIT_CONFIG
    print(f"address: {args.address}")
    case = "kept" if config.case_sensitive_local_part else "folded to lower case for look-ups"
    print(f"  normalised: local part {address.local!r} ({case}), domain {address.domain}")
    if not address.is_ascii:
        print("  non-ASCII address: needs SMTPUTF8 in MAIL FROM (assumed here)")
    logs.setup(config.log_format, config.log_level)  # a source that cannot answer logs why, in full
    try:
        policy = Policy(config)
    except OSError as error:  # a source's password file (the message names the source and the file)
        print(f"mda resolve: {error.strerror or error}", file=sys.stderr)
        return EXIT_USAGE
    resolution = policy.resolve(address, smtputf8=True)
    resolution = check_capacity(config, resolution, args.size, explain=True, read_only=True)
    for step in resolution.steps:
        print(f"  {step}")
    if args.size is None and resolution.mailboxes:
        print("  no --size: space and quota checked for a message of 0 bytes")
    if args.message is not None and resolution.accepted:
        from mda.filtering import explain

        try:
            message = args.message.read_bytes()
        except OSError as error:
            print(f"mda resolve: --message: {error}", file=sys.stderr)
            return EXIT_USAGE
        for line in explain(config, resolution.address, resolution.mailboxes, message, args.sender):
            print(f"  {line}")
    print(f"reply: {resolution.reply}")
    return EXIT_OK if resolution.accepted else EXIT_CONFIG


def cmd_sieve_check(args: argparse.Namespace) -> int:
    """Compile an address's Sieve scripts (before, the user's, after): 0 ok, 1 errors, 2 bad usage."""
    from mda.filtering import check_scripts

    config = _load_or_report(args.config)
    if config is None:
        return EXIT_USAGE
    try:
        resolution = Policy(config).resolve(parse_mailbox(args.address), smtputf8=True)
    except AddressError as error:
        print(f"mda sieve-check: {args.address!r}: {error}", file=sys.stderr)
        return EXIT_USAGE
    if not resolution.accepted:
        print(f"mda sieve-check: {args.address}: {resolution.reply}", file=sys.stderr)
        return EXIT_USAGE
    checked = check_scripts(config, resolution.mailboxes)
    if not checked:
        print(f"{args.address}: no Sieve script")
    for path, problem in checked:
        print(str(problem) if problem is not None else f"{path}: ok")
    return EXIT_CONFIG if any(problem is not None for _, problem in checked) else EXIT_OK


def cmd_deliver(args: argparse.Namespace) -> int:
    """LDA mode (mda/lda.py): sysexits codes, one status line per recipient on standard output."""
    from mda.lda import run

    return run(args.config, args.sender, args.recipients, stdin=sys.stdin.buffer, stdout=sys.stdout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mda", description="Mail delivery agent (LMTP/SMTP → Maildir/mbox)")
    parser.add_argument("--version", action="version", version=f"mda {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    with_config = argparse.ArgumentParser(add_help=False)
    with_config.add_argument("--config", type=Path, help="configuration file (default: the embedded one)")

    serve = commands.add_parser("serve", parents=[with_config], help="run the server")
    serve.set_defaults(func=cmd_serve)

    check = commands.add_parser("check-config", parents=[with_config], help="validate a configuration")
    check.add_argument("--print", action="store_true", help="print the effective configuration")
    check.add_argument("--against", type=Path, metavar="OLD", help="list addresses whose destination changes")
    check.add_argument("--connect", action="store_true", help="ask each userdb source and the state store once")
    check.set_defaults(func=cmd_check_config)

    resolve = commands.add_parser("resolve", parents=[with_config], help="explain where an address is delivered")
    resolve.add_argument("address")
    resolve.add_argument("--size", type=int, help="message size, as the SIZE parameter would say")
    resolve.add_argument("--message", type=Path, metavar="FILE", help="also show the Sieve actions for this message")
    resolve.add_argument("-f", "--from", dest="sender", default="", help="envelope sender for --message")
    resolve.set_defaults(func=cmd_resolve)

    deliver = commands.add_parser(
        "deliver", parents=[with_config], help="LDA mode: deliver one message read from standard input"
    )
    deliver.add_argument("-f", "--from", dest="sender", default="", help='envelope sender ("" = null sender)')
    deliver.add_argument("recipients", nargs="+", metavar="RECIPIENT")
    deliver.set_defaults(func=cmd_deliver)

    sieve_check = commands.add_parser("sieve-check", parents=[with_config], help="compile an address's Sieve scripts")
    sieve_check.add_argument("address")
    sieve_check.set_defaults(func=cmd_sieve_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(arguments)
    except SystemExit as exit_:
        if exit_.code and arguments[:1] == ["deliver"]:
            # An MTA runs "deliver" unattended: a broken command line must defer mail, never bounce it.
            return EX_TEMPFAIL
        return EXIT_USAGE if exit_.code else EXIT_OK
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
