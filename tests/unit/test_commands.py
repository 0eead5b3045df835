"""The ``anymal-lit`` command line: one overview of every command, one module per kit command, one-line user errors."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from anymal_lit.cli import main
from anymal_lit.commands import COMMANDS, LIGHTNING_COMMANDS, command_module


def _cli(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from anymal_lit.cli import main; main(sys.argv[1:]); print(sorted(m for m in sys.modules))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_command_with_its_line_without_importing_torch():
    done = _cli("--help")
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith("  ")}
    assert set(listed) == set(COMMANDS) | set(LIGHTNING_COMMANDS)
    for name in COMMANDS:
        assert command_module(name).HELP in listed[name]
    assert "'torch'" not in done.stdout.splitlines()[-1]  # the module list printed after main() returned


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_module_documents_and_parses_its_options(name):
    module = command_module(name)
    assert module.__doc__ and module.HELP and len(module.HELP.splitlines()) == 1
    assert callable(getattr(module, "run", None)) or callable(getattr(module, "run_argv", None))
    parser = argparse.ArgumentParser(prog=f"anymal-lit {name}")
    module.add_arguments(parser)  # no heavy import needed to build it
    assert parser.format_help()


def _main_exit(capsys, *args: str) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    return exit_.value.code, capsys.readouterr().err.strip().splitlines()


def test_a_user_error_in_a_kit_command_is_one_line_and_exit_2(tmp_path, capsys):
    code, err = _main_exit(capsys, "convert", "vqav2", "--out", str(tmp_path / "x.jsonl"), "--questions", "q.json")
    assert code == 2
    assert err == [
        "anymal-lit convert: error: convert vqav2 needs --annotations --images (--debug shows the traceback)"
    ]
    missing = tmp_path / "none.tsv"
    code, err = _main_exit(capsys, "convert", "mmbench", "--tsv", str(missing), "--images", str(tmp_path), "--out", "o")
    assert code == 2 and len(err) == 1 and str(missing) in err[0]
    with pytest.raises(FileNotFoundError):  # --debug: the exception itself, with its traceback
        main(["convert", "mmbench", "--tsv", str(missing), "--images", str(tmp_path), "--out", "o", "--debug"])
