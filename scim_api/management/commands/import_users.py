"""`import_users FILE --source NAME [--dry-run] [--map COLUMN=PATH ...]`: a CSV file into the directory.

The rows become one job of the source and go through the same pipeline as a
bulkUpload (matching, mappings, scoping, allowed actions, guard, effective
dates), applied here with a progress line, then a summary. `--dry-run` shows
what would happen and writes nothing; `--queue` hands the job to the workers
and follows it instead.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper

from scim_api.inbound import csv_import, paths, services
from scim_api.inbound.models import InboundJob, InboundRecord, InboundSource

SHOWN_PROBLEMS = 20


class Progress:
    """One line redrawn in place on a terminal; elsewhere (logs, pipes) a plain line every few seconds."""

    def __init__(self, stream: OutputWrapper, *, total: int, label: str) -> None:
        self.stream, self.total, self.label = stream, total, label
        self.tty = stream.isatty()
        self.done = 0
        self.started = self.shown = time.monotonic()

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.shown >= (0.2 if self.tty else 5.0) or self.done >= self.total:
            self.shown = now
            self._write()

    def _line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        share = self.done / self.total if self.total else 1.0
        bar = "#" * int(share * 30) + "." * (30 - int(share * 30))
        rate = self.done / elapsed
        return f"{self.label} [{bar}] {share:4.0%} {self.done:,}/{self.total:,} records, {rate:,.0f}/s"

    def _write(self) -> None:
        if self.tty:
            self.stream.write(f"\r\x1b[K{self._line()}", ending="")
            self.stream.flush()
        else:
            self.stream.write(self._line())

    def close(self) -> None:
        if self.tty:
            self.stream.write("")


class Command(BaseCommand):
    help = "Import users from a CSV file through an inbound source (joiners, movers, leavers)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="The CSV file ('-' for standard input), with a header line.")
        parser.add_argument("--source", required=True, help="The inbound source's name.")
        parser.add_argument("--dry-run", action="store_true", help="Show what would happen; write nothing.")
        parser.add_argument(
            "--map",
            action="append",
            default=[],
            metavar="COLUMN=PATH",
            help="What a column holds (e.g. 'Employee ID=externalId', "
            "'Mail=emails[type eq \"work\"].value'); columns not named keep their guessed path; "
            "'COLUMN=' leaves one out.",
        )
        parser.add_argument("--delimiter", help="The field separator (guessed from the header otherwise).")
        parser.add_argument(
            "--queue", action="store_true", help="Let the workers apply the job and follow its progress."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        source = InboundSource.objects.select_related("client").filter(name=options["source"]).first()
        if source is None:
            names = ", ".join(InboundSource.objects.values_list("name", flat=True)) or "none yet"
            raise CommandError(f"No inbound source {options['source']!r} (sources: {names}).")
        raw = sys.stdin.buffer.read() if options["file"] == "-" else self._read(options["file"])
        try:
            csv_file = csv_import.read_csv(raw, delimiter=options["delimiter"])
            columns = {
                **csv_import.default_columns(csv_file, source),
                **csv_import.parse_column_options(options["map"]),
            }
            unknown = sorted(set(columns) - set(csv_file.headers))
            if unknown:
                raise CommandError(f"--map names columns the file does not have: {', '.join(unknown)}")
            operations = csv_import.build_operations(csv_file, columns)
        except (csv_import.CsvError, paths.PathError) as exc:
            raise CommandError(str(exc)) from None
        for header in csv_file.headers:
            self.stderr.write(f"  {header!r} → {columns[header] or '(left out)'}")
        total = len(operations)
        started = time.monotonic()
        if options["dry_run"]:
            progress = Progress(self.stderr, total=total, label="dry run")
            records = services.dry_run(source=source, operations=operations, progress=progress.advance)
            progress.close()
            self._summary(Counter(record.outcome for record in records), records, total, started, dry=True)
            return
        job = services.job_stage(
            source=source,
            operations=operations,
            origin=InboundJob.Origin.CLI,
            created_by="import_users",
            filename=Path(options["file"]).name[:255],
            notify=options["queue"],
        )
        progress = Progress(self.stderr, total=total, label=f"job {job.pk}")
        if options["queue"]:
            job = self._follow(job, progress)
        else:
            try:
                job = services.job_run_inline(job, progress=progress.advance)
            except RuntimeError as exc:
                raise CommandError(f"{exc} The job {job.pk} is queued; a worker will apply it.") from None
        progress.close()
        problems = list(
            job.records.filter(
                outcome__in=[InboundRecord.Outcome.FAILED, InboundRecord.Outcome.HELD]
            ).order_by("index")[:SHOWN_PROBLEMS]
        )
        self._summary(Counter(job.counts), problems, total, started, dry=False, job=job)

    def _read(self, name: str) -> bytes:
        try:
            return Path(name).read_bytes()
        except OSError as exc:
            raise CommandError(f"Cannot read {name}: {exc.strerror}") from None

    def _follow(self, job: InboundJob, progress: Progress) -> InboundJob:
        while True:
            job.refresh_from_db()
            pending = job.records.filter(outcome=InboundRecord.Outcome.PENDING).count()
            progress.advance(job.total - pending - progress.done)
            if job.is_finished:
                return job
            time.sleep(1.0)

    def _summary(
        self,
        counts: Counter[str],
        records: list[InboundRecord],
        total: int,
        started: float,
        *,
        dry: bool,
        job: InboundJob | None = None,
    ) -> None:
        elapsed = time.monotonic() - started
        verb = "would be" if dry else "were"
        parts = [
            f"{counts[outcome]:,} {outcome}" for outcome in InboundRecord.Outcome.values if counts[outcome]
        ]
        self.stdout.write(
            f"{total:,} rows in {elapsed:.1f} s ({total / max(elapsed, 1e-6):,.0f}/s): " + ", ".join(parts)
        )
        if job is not None:
            self.stdout.write(f"job {job.pk}: {job.status}")
        shown = [
            r for r in records if r.outcome in (InboundRecord.Outcome.FAILED, InboundRecord.Outcome.HELD)
        ]
        for record in shown[:SHOWN_PROBLEMS]:
            why = (record.error or {}).get("detail") or record.reason
            self.stdout.write(f"  {record.bulk_id} (key {record.key or '-'}) {verb} {record.outcome}: {why}")
        if len(shown) > SHOWN_PROBLEMS or counts["failed"] + counts["held"] > SHOWN_PROBLEMS:
            self.stdout.write("  ... (the admin lists every record of the job)")
