"""`import_directory FILE [--merge] [--dry-run]`: load an export_directory file (see scim_api.portable)."""

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from directory.actors import Actor
from scim_api import portable


class Command(BaseCommand):
    help = (
        "Import a file written by export_directory, keeping every id, in one transaction. "
        "Refuses a directory that is not empty unless --merge."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="The export file; '-' reads standard input.")
        parser.add_argument(
            "--merge",
            action="store_true",
            help="Import into a directory that holds objects already: objects whose id exists are "
            "updated to the file's state, others created; nothing is deleted.",
        )
        parser.add_argument("--dry-run", action="store_true", help="Do everything, then roll it back.")
        parser.add_argument("--chunk-size", type=int, default=1000, help="New users written per statement.")

    def handle(self, *args: Any, **options: Any) -> None:
        path: str = options["file"]
        actor = Actor.system("import_directory")

        def progress(report: portable.ImportReport) -> None:
            done = sum(report.created.values()) + sum(report.updated.values())
            self.stderr.write(f"... {done} objects so far")

        try:
            if path == "-":
                report = self._run(sys.stdin, actor, options, progress)
            else:
                with open(path, encoding="utf-8") as lines:
                    report = self._run(lines, actor, options, progress)
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror}") from None
        except portable.ImportRefused as exc:
            raise CommandError(f"Nothing imported: {exc}") from None
        for warning in report.warnings:
            self.stderr.write(f"warning: {warning}")
        prefix = "Dry run, nothing written. Would have " if options["dry_run"] else ""
        verbs = ("created", "updated", "left unchanged")
        parts = []
        for verb, counts in zip(verbs, (report.created, report.updated, report.unchanged), strict=True):
            if any(counts.values()) or verb == "created":
                schemas, users, groups = counts["Schema"], counts["User"], counts["Group"]
                parts.append(f"{verb} {schemas} schema(s), {users} user(s), {groups} group(s)")
        text = "; ".join(parts)
        self.stdout.write(prefix + (text if prefix else text[0].upper() + text[1:]))

    def _run(self, lines: Any, actor: Actor, options: dict[str, Any], progress: Any) -> portable.ImportReport:
        return portable.import_directory(
            lines,
            actor=actor,
            merge=options["merge"],
            dry_run=options["dry_run"],
            chunk_size=options["chunk_size"],
            progress=progress,
        )
