"""Settings from outside the command line: a TOML file and environment variables.

Precedence, highest first: the command line, `STOGIE_CMD_ARGS`, `STOGIE_<OPTION>` variables,
the file given with `-c`/`--config` (else `[tool.stogie]` in ./pyproject.toml), the defaults.
Keys and variables are named like the long options (`max-requests` or `max_requests` in a file,
`STOGIE_MAX_REQUESTS` in the environment; `app` for MODULE:APP). Everything becomes command-line
tokens placed before the real ones, so argparse applies the precedence (the last value wins)
and checks every value the same way.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:                                                   # pragma: no cover - Python < 3.11
    import tomli as tomllib

#: Options that only make sense on the command line itself.
_NOT_SETTINGS = frozenset({"help", "version", "config", "print_config"})


class ConfigError(Exception):
    """A configuration file or variable stogie cannot use; the message names it."""


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Long options by destination name (`max_requests`), plus `app`."""
    found: dict[str, argparse.Action] = {}
    for action in parser._actions:  # argparse has no public listing of its actions
        if action.dest in _NOT_SETTINGS:
            continue
        if action.option_strings or action.dest == "app":
            found[action.dest] = action
    return found


def _tokens(key: str, value: Any, action: argparse.Action, source: str) -> list[str]:
    """Command-line tokens for one setting."""
    flag = next(o for o in action.option_strings if o.startswith("--"))
    if action.nargs == 0:                                   # a switch: true or false
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} takes true or false, not {value!r}")
        negative = [o for o in action.option_strings if o.startswith("--no-")]
        return [flag] if value else negative[:1]
    if isinstance(action, argparse._AppendAction) and isinstance(value, (list, dict)):
        # A repeatable option: one token per item; a table gives KEY=VALUE items
        # (static = {"/static/" = "/srv/static"}).
        items = [f"{k}={v}" for k, v in value.items()] if isinstance(value, dict) else value
        if not all(isinstance(v, (str, int, float)) for v in items):
            raise ConfigError(f"{source}: {key} takes a list of strings, not {value!r}")
        return [f"{flag}={v}" for v in items]
    if isinstance(value, (list, dict)):
        if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
            value = ",".join(str(v) for v in value)       # e.g. forwarded-allow-ips
        else:
            raise ConfigError(f"{source}: {key} takes one value, not {value!r}")
    if isinstance(value, bool):
        raise ConfigError(f"{source}: {key} takes a value, not {value!r}")
    return [f"{flag}={value}"]


def file_settings(path: str | None, cwd: Path) -> tuple[dict[str, Any], str | None]:
    """(settings, where they came from): `path` (which must exist), else pyproject.toml's
    `[tool.stogie]` in `cwd` when there is one."""
    if path is not None:
        try:
            with open(path, "rb") as f:
                return tomllib.load(f), path
        except OSError as exc:
            raise ConfigError(f"cannot read --config {path!r}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"--config {path!r} is not valid TOML: {exc}") from None
    pyproject = cwd / "pyproject.toml"
    if not pyproject.is_file():
        return {}, None
    try:
        with open(pyproject, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return {}, None                  # not ours to judge; a project file stogie may ignore
    section = data.get("tool", {}).get("stogie")
    return (section, f"{pyproject} [tool.stogie]") if isinstance(section, dict) else ({}, None)


def settings_tokens(parser: argparse.ArgumentParser, config_path: str | None,
                    environ: Mapping[str, str], cwd: Path) -> tuple[list[str], str | None]:
    """(option tokens to place before the command line, MODULE:APP if a setting names it)."""
    options = _options(parser)
    settings, source = file_settings(config_path, cwd)
    tokens: list[str] = []
    app: str | None = None
    for key, value in settings.items():
        action = options.get(key.replace("-", "_"))
        if action is None:
            raise ConfigError(f"{source}: unknown setting {key!r} (settings are named like the "
                              "long options, e.g. max-requests)")
        if action.dest == "app":
            app = str(value)
            continue
        tokens += _tokens(key, value, action, str(source))
    for dest, action in options.items():
        variable = f"STOGIE_{dest.upper()}"
        if variable not in environ:
            continue
        text = environ[variable]
        if action.dest == "app":
            app = text
            continue
        value: Any = text
        if action.nargs == 0:
            if text.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
                raise ConfigError(f"{variable}={text!r}: use 1 or 0")
            value = text.lower() in ("1", "true", "yes", "on")
        tokens += _tokens(variable, value, action, "environment")
    tokens += shlex.split(environ.get("STOGIE_CMD_ARGS", ""))
    return tokens, app


def describe(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """The merged settings as TOML, for `--print-config`."""
    lines = []
    for dest in sorted(_options(parser)):
        value = getattr(args, dest, None)
        if value is None:
            continue
        key = dest.replace("_", "-")
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, (int, float)):
            lines.append(f"{key} = {value}")
        elif isinstance(value, list):
            lines.append(f"{key} = [{', '.join(_quote(str(v)) for v in value)}]")
        else:
            lines.append(f"{key} = {_quote(str(value))}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

