"""`export_directory [FILE|-]`: the whole directory as SCIM JSON lines (see scim_api.portable)."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from scim_api import portable


class Command(BaseCommand):
    help = (
        "Write every extension schema, user (password hashes included) and group (direct members) "
        "as SCIM JSON, one resource per line, to FILE or standard output."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", nargs="?", default="-", help="Where to write; '-' (default) is stdout.")
        parser.add_argument("--page-size", type=int, default=1000, help="Users or groups read per query.")

    def handle(self, *args: Any, **options: Any) -> None:
        path: str = options["file"]
        if path == "-":
            counts = portable.export_directory(self.stdout, page_size=options["page_size"])
        else:
            with open(path, "w", encoding="utf-8") as out:
                counts = portable.export_directory(out, page_size=options["page_size"])
        # stderr, so that `export_directory > file` and `export_directory - | ...` stay pure JSON.
        self.stderr.write(
            f"Exported {counts['Schema']} extension schema(s), {counts['User']} user(s), "
            f"{counts['Group']} group(s)" + ("" if path == "-" else f" to {path}")
        )
