"""Settings from a TOML file, pyproject.toml and the environment, with the command line on
top: command line > STOGIE_CMD_ARGS > STOGIE_<OPTION> > file > defaults."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import requests

from stogie import cli

from _apps import free_port, stogie_script

FILE = '''
app = "hello:app"
workers = 2
threads = 4
bind = "127.0.0.1:1000"
timeout = 5
forwarded-allow-ips = ["10.0.0.0/8", "127.0.0.1"]
proxy-protocol = true
'''


def parse(argv: list[str], env: dict[str, str], cwd: Path) -> object:
    return cli.parse_args(argv, environ=env, cwd=cwd)


@pytest.mark.parametrize("argv, env, expected", [
    ([], {}, {"workers": 2, "threads": 4, "timeout": 5.0, "app": "hello:app"}),
    ([], {"STOGIE_WORKERS": "3"}, {"workers": 3, "threads": 4}),
    (["--threads", "8"], {"STOGIE_THREADS": "6"}, {"threads": 8}),
    ([], {"STOGIE_TIMEOUT": "6", "STOGIE_CMD_ARGS": "--timeout 7"}, {"timeout": 7.0}),
    (["--timeout", "9"], {"STOGIE_CMD_ARGS": "--timeout 7"}, {"timeout": 9.0}),
    (["other:app"], {"STOGIE_APP": "env:app"}, {"app": "other:app"}),
    ([], {"STOGIE_APP": "env:app"}, {"app": "env:app"}),
    ([], {"STOGIE_PROXY_PROTOCOL": "0"}, {"proxy_protocol": False}),
], ids=["file", "env-over-file", "cli-over-env", "cmd-args-over-env", "cli-over-cmd-args",
        "cli-app", "env-app", "env-switch-off"])
def test_precedence(tmp_path: Path, argv: list[str], env: dict[str, str],
                    expected: dict) -> None:
    config = tmp_path / "stogie.toml"
    config.write_text(FILE)
    args = parse(["-c", str(config), *argv], env, tmp_path)
    for key, value in expected.items():
        assert getattr(args, key) == value, key
    assert args.bind_addr == ("127.0.0.1", 1000)
    assert args.forwarded_allow_ips == ["10.0.0.0/8", "127.0.0.1"]


def test_pyproject_section_when_no_file_is_given(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n\n'
                                             '[tool.stogie]\napp = "proj:app"\nworkers = 5\n')
    args = parse([], {}, tmp_path)
    assert (args.app, args.workers) == ("proj:app", 5)
    assert parse(["--workers", "1"], {}, tmp_path).workers == 1


@pytest.mark.parametrize("content, mention", [
    ("max_requestz = 5\n", "unknown setting 'max_requestz'"),
    ("workers = \"many\"\n", "--workers"),
    ("factory = 1\n", "factory takes true or false"),
    ("threads = [1, 2]\n", ""),
    ("this is not toml", "not valid TOML"),
])
def test_bad_settings_are_errors_with_the_key(tmp_path: Path, content: str, mention: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(content)
    proc = subprocess.run([stogie_script(), "-c", str(config), "m:a"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=20, check=False,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    assert mention in proc.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    proc = subprocess.run([stogie_script(), "-c", str(tmp_path / "none.toml"), "m:a"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=20, check=False,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "cannot read --config" in proc.stderr


def test_print_config_and_serving_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "hello.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'configured']\n")
    port = free_port()
    config = tmp_path / "stogie.toml"
    config.write_text(f'app = "hello:app"\nbind = "127.0.0.1:{port}"\nthreads = 3\n')
    env = {"STOGIE_THREADS": "7"}
    shown = subprocess.run([stogie_script(), "-c", str(config), "--print-config"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=20, check=True,
                           env={**_base_env(), **env}, stdin=subprocess.DEVNULL).stdout
    assert 'app = "hello:app"' in shown and "threads = 7" in shown
    assert f'bind = "127.0.0.1:{port}"' in shown
    proc = subprocess.Popen([stogie_script(), "-c", str(config)], cwd=tmp_path,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=_base_env())
    try:
        body = _get_when_up(f"http://127.0.0.1:{port}/")
        assert body == "configured"
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("STOGIE_")}


def _get_when_up(url: str) -> str:
    import time

    deadline = time.monotonic() + 15
    while True:
        try:
            return requests.get(url, timeout=2).text
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
