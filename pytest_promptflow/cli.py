"""The ``pytest-promptflow`` command: approve, reject and list the releases the gate wrote."""

from __future__ import annotations

import argparse
import getpass
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from pytest_promptflow import approvals
from pytest_promptflow.errors import SpecError

_ROOT_FILES = ("pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    folder = args.dir or find_release_dir(Path.cwd())
    try:
        if args.command == "approve":
            print(approvals.approve(folder, args.release, args.by or default_user(), args.note))
        elif args.command == "reject":
            print(approvals.reject(folder, args.release, args.by or default_user(), args.reason))
        else:
            _list(folder)
    except SpecError as error:
        print(f"pytest-promptflow: error: {error}", file=sys.stderr)
        return 2
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pytest-promptflow", description="Approve, reject and list the "
                                     "releases that pytest --promptflow-release wrote.")
    commands = parser.add_subparsers(dest="command", required=True)
    folder = argparse.ArgumentParser(add_help=False)
    folder.add_argument("--dir", type=Path, help="the releases folder (default: promptflow_release_dir of the "
                                                 "project around the current folder, or ./releases)")
    approve = commands.add_parser("approve", parents=[folder], help="approve a pending release as written")
    approve.add_argument("release", help="the release id, as `pytest-promptflow releases` lists it")
    approve.add_argument("--by", help="who approves (default: git config user.name, or the OS user)")
    approve.add_argument("--note", default="", help="a note kept with the approval")
    reject = commands.add_parser("reject", parents=[folder], help="reject a release, saying why")
    reject.add_argument("release", help="the release id, as `pytest-promptflow releases` lists it")
    reject.add_argument("--reason", required=True, help="why it is rejected")
    reject.add_argument("--by", help="who rejects (default: git config user.name, or the OS user)")
    commands.add_parser("releases", parents=[folder], help="list pending, approved and rejected releases")
    return parser


def _list(folder: Path) -> None:
    found = approvals.releases(folder)
    if not found:
        print(f"no releases in {folder}")
        return
    for path, record in found:
        decisions = record["decisions"]
        who = f"{decisions[-1]['by']} at {decisions[-1]['at']}" if decisions else f"written {record['created']}"
        print(f"{path.stem}  {record['status']:<8}  flow={record['flow']}  digest={record['digest'][:12]}  {who}")


def default_user() -> str:
    """``git config user.name``, or the OS user when git has none."""
    try:
        name = subprocess.run(["git", "config", "user.name"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        name = ""
    return name.strip() or getpass.getuser()


def find_release_dir(start: Path) -> Path:
    """``promptflow_release_dir`` of the nearest project folder above ``start`` (pytest's rootdir, roughly)."""
    for folder in (start, *start.parents):
        if any((folder / name).is_file() for name in _ROOT_FILES):
            return approvals.release_dir(folder, _ini_value(folder))
    return approvals.release_dir(start)


def _ini_value(folder: Path) -> str | None:
    """``promptflow_release_dir`` from ``pytest.ini`` or ``pyproject.toml`` in ``folder``, if set there."""
    if (folder / "pytest.ini").is_file():
        import configparser

        ini = configparser.ConfigParser()
        ini.read(folder / "pytest.ini", encoding="utf-8")
        return ini.get("pytest", "promptflow_release_dir", fallback=None)
    if (folder / "pyproject.toml").is_file():
        try:
            import tomllib
        except ImportError:  # Python 3.10: no TOML reader in the standard library
            return None
        try:
            with open(folder / "pyproject.toml", "rb") as file:
                options = tomllib.load(file).get("tool", {}).get("pytest", {}).get("ini_options", {})
        except (OSError, ValueError):  # pytest itself reports a broken pyproject.toml
            return None
        value = options.get("promptflow_release_dir")
        return str(value) if value else None
    return None


if __name__ == "__main__":
    sys.exit(main())
