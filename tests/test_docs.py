"""The operator docs name only management commands and options that exist, so they cannot silently rot."""

import re
from pathlib import Path

import pytest
from django.core.management import get_commands, load_command_class

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
# `manage.py NAME` and the long options that follow it on the same line.
COMMAND = re.compile(r"manage\.py\s+([a-z_]+)((?:[^\n|`]*?))(?=$|\||`|#)", re.MULTILINE)
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z-]*)")


def _mentions() -> list[tuple[str, str, str]]:
    found = []
    for path in DOCS:
        for match in COMMAND.finditer(path.read_text(encoding="utf-8")):
            found.append((path.name, match.group(1), match.group(2)))
    return found


def test_the_docs_name_management_commands() -> None:
    names = {name for _, name, _ in _mentions()}
    assert {"export_directory", "import_directory", "target_status", "sync_target", "add_target"} <= names


@pytest.mark.parametrize(("doc", "name", "rest"), _mentions())
def test_each_command_and_option_named_in_the_docs_exists(doc: str, name: str, rest: str) -> None:
    commands = get_commands()
    assert name in commands, f"{doc} names `manage.py {name}`, which does not exist"
    parser = load_command_class(commands[name], name).create_parser("manage.py", name)
    known = {option for action in parser._actions for option in action.option_strings}
    unknown = sorted(set(OPTION.findall(rest)) - known)
    assert not unknown, f"{doc}: `manage.py {name}` has no option {', '.join(unknown)}"
