"""`benchmarks/gpu_checks.sh` runs only on a lent GPU machine, rarely and against a clock: an option a
`docsam` command no longer has would be found there, too late. Its `docsam` invocations are checked here
against the commands' options."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from docsam_cli.app import load_command

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_checks.sh"


def docsam_invocations(script: str) -> list[tuple[str, list[str]]]:
    """(command, its `--options`) for every `-m docsam_cli COMMAND ...`, continuation lines joined."""
    joined = script.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        match = re.search(r"-m docsam_cli ([a-z-]+)(.*)", line)
        if match:
            words = shlex.split(match.group(2), comments=True)
            found.append((match.group(1), [word for word in words if word.startswith("--")]))
    return found


def test_the_script_is_read_whole():
    commands = [name for name, _ in docsam_invocations(SCRIPT.read_text())]
    assert {"segment", "convert-dataset", "finetune"} <= set(commands)


@pytest.mark.parametrize(("name", "options"), docsam_invocations(SCRIPT.read_text()))
def test_every_docsam_option_the_gpu_script_passes_exists(name, options):
    known = {
        option
        for parameter in load_command(name).params
        for option in parameter.opts + parameter.secondary_opts
    }
    assert [option for option in options if option not in known] == []


def test_a_removed_option_would_be_found():
    (invocation,) = docsam_invocations('"$PY" -m docsam_cli finetune "$D" --output "$W" \\\n  --lr 1e-4\n')
    assert invocation == ("finetune", ["--output", "--lr"])
    known = {option for parameter in load_command("finetune").params for option in parameter.opts}
    assert "--output" not in known and "--lr" in known
