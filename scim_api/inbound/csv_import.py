"""CSV files into inbound records: read, guess what each column is, and build one record per row.

Each column maps to an attribute path of the record (what a bulkUpload
operation's `data` would carry): a directory attribute (`userName`,
`name.givenName`, `emails[type eq "work"].value`, `department`, `manager` for
the manager's key, `active`) or any URN-qualified path the source's own
mappings read (`urn:contoso:employee:HireDate`). The records then go through
the same pipeline as an upload: the source's matching, mappings, scoping,
allowed actions, guard and effective dates.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from directory.columns import CORE_USER_URN, ENTERPRISE_USER_URN
from scim_api.inbound import paths
from scim_api.inbound.models import InboundSource

MAX_CSV_BYTES = 50 * 1_048_576

# Header (lower case, letters and digits only) → attribute path, for the usual HR export names.
_GUESSES: dict[str, str] = {
    "employeeid": "externalId",
    "employeenumber": "externalId",
    "workerid": "externalId",
    "personid": "externalId",
    "externalid": "externalId",
    "id": "externalId",
    "username": "userName",
    "login": "userName",
    "upn": "userName",
    "userprincipalname": "userName",
    "firstname": "name.givenName",
    "givenname": "name.givenName",
    "lastname": "name.familyName",
    "surname": "name.familyName",
    "familyname": "name.familyName",
    "middlename": "name.middleName",
    "displayname": "displayName",
    "fullname": "displayName",
    "preferredname": "nickName",
    "email": 'emails[type eq "work"].value',
    "mail": 'emails[type eq "work"].value',
    "workemail": 'emails[type eq "work"].value',
    "phone": 'phoneNumbers[type eq "work"].value',
    "workphone": 'phoneNumbers[type eq "work"].value',
    "mobile": 'phoneNumbers[type eq "mobile"].value',
    "mobilephone": 'phoneNumbers[type eq "mobile"].value',
    "title": "title",
    "jobtitle": "title",
    "department": "department",
    "dept": "department",
    "division": "division",
    "organization": "organization",
    "organisation": "organization",
    "company": "organization",
    "costcenter": "costCenter",
    "costcentre": "costCenter",
    "manager": "manager",
    "managerid": "manager",
    "manageremployeeid": "manager",
    "active": "active",
    "status": "active",
    "usertype": "userType",
    "employeetype": "userType",
    "workertype": "userType",
    "locale": "locale",
    "timezone": "timezone",
    "preferredlanguage": "preferredLanguage",
    "city": 'addresses[type eq "work"].locality',
    "country": 'addresses[type eq "work"].country',
}
_HIRE = {"hiredate", "startdate", "hired", "start"}
_TERMINATION = {"terminationdate", "enddate", "leavedate", "leavingdate", "terminated"}


class CsvError(ValueError):
    """The file is not a CSV this importer can read; the message says why."""


@dataclass(frozen=True)
class CsvFile:
    headers: list[str]
    rows: list[dict[str, str]]
    # The file's line number of each row (the header is line 1), for bulkIds and messages.
    lines: list[int]


def read_csv(data: bytes | str, *, delimiter: str | None = None) -> CsvFile:
    """Parse a CSV export (UTF-8, with or without BOM; comma, semicolon or tab separated)."""
    if isinstance(data, bytes):
        if len(data) > MAX_CSV_BYTES:
            raise CsvError(f"The file is larger than {MAX_CSV_BYTES // 1_048_576} MiB.")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise CsvError("The file is not UTF-8 text (export it as CSV UTF-8).") from None
    else:
        text = data.removeprefix("\ufeff")
    if not text.strip():
        raise CsvError("The file is empty.")
    if delimiter is None:
        first = text.split("\n", 1)[0]
        delimiter = max([",", ";", "\t", "|"], key=first.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        headers = [header.strip() for header in next(reader)]
    except (StopIteration, csv.Error) as exc:
        raise CsvError(f"The header line cannot be read: {exc}") from None
    if not any(headers):
        raise CsvError("The first line must name the columns.")
    duplicates = sorted({header for header in headers if header and headers.count(header) > 1})
    if duplicates:
        raise CsvError(f"Column names appear twice: {', '.join(duplicates)}.")
    rows: list[dict[str, str]] = []
    lines: list[int] = []
    try:
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) > len(headers):
                raise CsvError(
                    f"Line {reader.line_num} has {len(cells)} cells but the header names "
                    f"{len(headers)} columns."
                )
            rows.append({header: cell for header, cell in zip(headers, cells, strict=False) if header})
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise CsvError(f"Line {reader.line_num}: {exc}") from None
    return CsvFile(headers=[header for header in headers if header], rows=rows, lines=lines)


def _normalised(header: str) -> str:
    return re.sub(r"[^a-z0-9]", "", header.lower())


def _source_path(text: str) -> str | None:
    """The record path a source setting reads, when it is a bare path or a lone `[path]`."""
    stripped = text.strip()
    match = re.fullmatch(r"\[([^\[\]]+)\]", stripped)
    if match:
        return match.group(1).strip()
    return stripped if stripped and not any(char in stripped for char in '[("') else None


def guess_path(header: str, source: InboundSource) -> str:
    """The attribute path a column probably holds, or "" to leave it out."""
    try:
        canonical = paths.canonical_target(header)
        # Enterprise attributes read better without their URN, and mean the same.
        return canonical.removeprefix(f"{ENTERPRISE_USER_URN}:")
    except paths.PathError:
        pass
    if header.strip().lower().startswith("urn:"):
        return header.strip()
    name = _normalised(header)
    if name in _HIRE and source.hire_date_source:
        return _source_path(source.hire_date_source) or ""
    if name in _TERMINATION and source.termination_date_source:
        return _source_path(source.termination_date_source) or ""
    match_path = _source_path(source.match_source)
    if _GUESSES.get(name) == "externalId" and match_path:
        return match_path
    return _GUESSES.get(name, "")


def check_path(path: str) -> str:
    """A column's path, canonical when it is a directory attribute; PathError when it is neither that
    nor a URN-qualified path of the record."""
    text = path.strip()
    if text.lower() in ("manager", "manager.value"):
        return "manager"
    try:
        return paths.canonical_target(text)
    except paths.PathError:
        if text.lower().startswith("urn:") and ":" in text[4:]:
            return text
        raise


def build_operations(csv_file: CsvFile, columns: Mapping[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """One (bulkId, record) per row; `columns` maps headers to checked paths (others are left out).

    An empty cell leaves its attribute out of the record, so it is left as it is
    in the directory.
    """
    targets = {header: check_path(path) for header, path in columns.items() if path}
    operations: list[tuple[str, dict[str, Any]]] = []
    for row, line in zip(csv_file.rows, csv_file.lines, strict=True):
        record: dict[str, Any] = {"schemas": [CORE_USER_URN, ENTERPRISE_USER_URN]}
        for header, target in targets.items():
            value = (row.get(header) or "").strip()
            if value:
                paths.set_path(
                    record, f"{ENTERPRISE_USER_URN}:manager" if target == "manager" else target, value
                )
        operations.append((f"line{line}", record))
    return operations


def target_suggestions(source: InboundSource) -> list[str]:
    """Paths to offer in the mapping step: directory attributes, then what the source's settings read."""
    from directory import extensions

    suggestions = [
        "externalId",
        "userName",
        "name.givenName",
        "name.familyName",
        "name.middleName",
        "displayName",
        "nickName",
        "title",
        "userType",
        "active",
        'emails[type eq "work"].value',
        'phoneNumbers[type eq "work"].value',
        'phoneNumbers[type eq "mobile"].value',
        'addresses[type eq "work"].locality',
        'addresses[type eq "work"].country',
        "department",
        "division",
        "organization",
        "costCenter",
        "manager",
        "preferredLanguage",
        "locale",
        "timezone",
    ]
    for schema in extensions.definitions().for_type("user"):
        suggestions.extend(f"{schema.urn}:{attribute.name}" for attribute in schema.attributes)
    for text in (source.match_source, source.hire_date_source, source.termination_date_source):
        path = _source_path(text) if text else None
        if path and path not in suggestions:
            suggestions.append(path)
    return suggestions


def default_columns(csv_file: CsvFile, source: InboundSource) -> dict[str, str]:
    return {header: guess_path(header, source) for header in csv_file.headers}


def parse_column_options(options: Sequence[str]) -> dict[str, str]:
    """`--map "Employee ID=externalId"` options as {header: path}; an empty path leaves a column out."""
    columns: dict[str, str] = {}
    for option in options:
        header, separator, path = option.partition("=")
        if not separator or not header.strip():
            raise CsvError(f"--map takes COLUMN=PATH, not {option!r}")
        columns[header.strip()] = path.strip()
    return columns
