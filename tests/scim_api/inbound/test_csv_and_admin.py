"""CSV import (the admin's upload → columns → preview → import, and `import_users`), and the admin pages."""

import io
import re
from http import HTTPStatus

import pytest
from django.contrib.admin.models import LogEntry
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse

from directory.models import ChangeEvent, User
from scim_api.inbound import csv_import, services
from scim_api.inbound.models import (
    InboundJob,
    InboundRecord,
    InboundScheduledAction,
    InboundSource,
    InboundUpload,
)
from scim_api.models import ScimClient, hash_token
from tests.scim_api.inbound.conftest import worker_record

pytestmark = pytest.mark.django_db

HR_CSV = """Employee ID,First Name,Last Name,Email,Login,Department,Manager,Status,Start Date
100,Ada,Lovelace,ada@corp.example,ada@example.com,Research,,Active,
101,Alan,Turing,alan@corp.example,alan@example.com,Research,100,active,
102,Grace,Hopper,,grace@example.com,Navy,100,inactive,
103,Bad,Row,,,Nowhere,,active,
"""


# --- reading and mapping ------------------------------------------------------------------------


def test_columns_are_guessed_from_usual_hr_export_names(hr_source):
    source = hr_source[0]
    source.hire_date_source = "urn:contoso:employee:HireDate"
    csv_file = csv_import.read_csv(HR_CSV.encode())

    assert csv_import.default_columns(csv_file, source) == {
        "Employee ID": "externalId",
        "First Name": "name.givenName",
        "Last Name": "name.familyName",
        "Email": 'emails[type eq "work"].value',
        "Login": "userName",
        "Department": "department",
        "Manager": "manager",
        "Status": "active",
        "Start Date": "urn:contoso:employee:HireDate",
    }


def test_rows_become_records_with_empty_cells_left_out():
    csv_file = csv_import.read_csv(b"\xef\xbb\xbfid;mail;dept;level\n7;a@x.example;Ops;\n")
    columns = {"id": "externalId", "mail": 'emails[type eq "work"].value', "dept": "department", "level": ""}

    assert csv_import.build_operations(csv_file, columns) == [
        (
            "line2",
            {
                "schemas": [
                    "urn:ietf:params:scim:schemas:core:2.0:User",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
                ],
                "externalId": "7",
                "emails": [{"type": "work", "value": "a@x.example"}],
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Ops"},
            },
        )
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The file is empty."),
        (b"\xff\xfe\x00a", "The file is not UTF-8 text (export it as CSV UTF-8)."),
        (b"a,a\n1,2\n", "Column names appear twice: a."),
        (b"a,b\n1,2,3\n", "Line 2 has 3 cells but the header names 2 columns."),
    ],
)
def test_unreadable_files_are_refused_with_the_reason(data, message):
    with pytest.raises(csv_import.CsvError, match=re.escape(message)):
        csv_import.read_csv(data)


def test_a_column_path_that_is_no_attribute_is_refused():
    with pytest.raises(csv_import.paths.PathError, match="is not a directory attribute"):
        csv_import.check_path("shoeSize")
    assert csv_import.check_path("urn:contoso:employee:HireDate") == "urn:contoso:employee:HireDate"
    assert csv_import.check_path('EMAILS[type eq "work"].VALUE') == 'emails[type eq "work"].value'


# --- import_users --------------------------------------------------------------------------------


def _write(tmp_path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "workers.csv"
    path.write_text(text)
    return path


def test_import_users_applies_the_file_through_the_source_and_prints_a_summary(tmp_path, hr_source):
    out, err = io.StringIO(), io.StringIO()

    call_command("import_users", str(_write(tmp_path, HR_CSV)), "--source", "hr", stdout=out, stderr=err)

    job = InboundJob.objects.get()
    ada, alan = User.objects.get(employee_number="100"), User.objects.get(employee_number="101")
    assert (job.origin, job.status) == ("cli", "completedWithErrors")
    assert job.counts["created"] == 2
    assert job.counts["skipped"] == 1
    assert job.counts["failed"] == 1
    assert (ada.given_name, ada.department, alan.manager_id) == ("Ada", "Research", ada.pk)
    assert list(ada.values.values_list("value", flat=True)) == ["ada@corp.example"]
    summary = out.getvalue()
    assert "4 rows in" in summary
    assert "2 created, 1 skipped, 1 failed" in summary
    assert "line5 (key 103) were failed: userName is required" in summary
    assert f"job {job.pk}: completedWithErrors" in summary
    assert "job " in err.getvalue()
    assert "'Employee ID' → externalId" in err.getvalue()


def test_import_users_dry_run_writes_nothing(tmp_path, hr_source):
    out = io.StringIO()

    call_command(
        "import_users",
        str(_write(tmp_path, HR_CSV)),
        "--source",
        "hr",
        "--dry-run",
        stdout=out,
        stderr=io.StringIO(),
    )

    assert "2 created, 1 skipped, 1 failed" in out.getvalue()
    assert "would be failed" in out.getvalue()
    assert not User.objects.exists()
    assert not InboundJob.objects.exists()
    assert not ChangeEvent.objects.exists()


def test_import_users_takes_column_paths_and_reports_bad_ones(tmp_path, hr_source):
    path = _write(tmp_path, "Worker,Mail,Login\n9,n@corp.example,nine@example.com\n")
    call_command(
        "import_users",
        str(path),
        "--source",
        "hr",
        "--map",
        "Worker=externalId",
        "--map",
        'Mail=emails[type eq "home"].value',
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    user = User.objects.get(employee_number="9")
    assert list(user.values.values_list("value", "type")) == [("n@corp.example", "home")]

    with pytest.raises(CommandError, match="is not a directory attribute"):
        call_command(
            "import_users", str(path), "--source", "hr", "--map", "Mail=shoeSize", stderr=io.StringIO()
        )
    with pytest.raises(CommandError, match="No inbound source 'payroll'"):
        call_command("import_users", str(path), "--source", "payroll")
    with pytest.raises(CommandError, match="--map names columns the file does not have: Phone"):
        call_command(
            "import_users", str(path), "--source", "hr", "--map", "Phone=phoneNumbers", stderr=io.StringIO()
        )


# --- the admin --------------------------------------------------------------------------------------


def test_adding_a_source_in_the_admin_creates_its_client_and_shows_the_token_once(admin_client_logged_in):
    response = admin_client_logged_in.post(
        reverse("admin:scim_api_inboundsource_add"),
        {
            "name": "workday",
            "description": "",
            "enabled": "on",
            "match_source": "externalId",
            "match_target": "employeeNumber",
            "map_standard_attributes": "on",
            "mappings": '[{"target": "department", "source": "[urn:contoso:hr:1.0:User:dept]"}]',
            "scoping_filter": 'not (userType eq "Contractor")',
            "allow_create": "on",
            "allow_update": "on",
            "leaver_action": "disable",
            "hire_date_source": "",
            "termination_date_source": "",
        },
        follow=True,
    )

    source = InboundSource.objects.get(name="workday")
    message = next(str(m) for m in response.context["messages"])
    token = re.search(r"(scim_\S+)", message).group(1)
    assert source.client.name == "inbound source workday"
    assert (source.allow_enable, source.allow_disable) == (False, False)
    assert ScimClient.objects.get(pk=source.client_id).token_hash == hash_token(token)


def test_a_source_with_a_bad_mapping_or_filter_is_refused_with_the_reason(admin_client_logged_in):
    data = {
        "name": "broken",
        "match_source": "externalId",
        "match_target": "employeeNumber",
        "mappings": '[{"target": "shoeSize", "source": "[x]"}]',
        "leaver_action": "disable",
    }
    response = admin_client_logged_in.post(reverse("admin:scim_api_inboundsource_add"), data)

    assert response.status_code == HTTPStatus.OK
    assert "mapping 1: &#x27;shoeSize&#x27; is not a directory attribute" in response.content.decode()
    data["mappings"] = "[]"
    data["scoping_filter"] = "userType eq"
    response = admin_client_logged_in.post(reverse("admin:scim_api_inboundsource_add"), data)
    assert "scoping filter:" in response.content.decode()
    assert not InboundSource.objects.exists()


def test_the_csv_import_in_the_admin_maps_columns_previews_then_queues_a_job(
    admin_client_logged_in, hr_source, monkeypatch
):
    sent: list[str] = []
    monkeypatch.setattr("scim_api.inbound.queue.send", lambda job_id: sent.append(str(job_id)))
    source = hr_source[0]
    start = reverse("admin:scim_api_inbound_import", args=[source.pk])

    response = admin_client_logged_in.post(start, {"file": SimpleUploadedFile("hr.csv", HR_CSV.encode())})
    upload = InboundUpload.objects.get()
    mapping_url = reverse("admin:scim_api_inbound_import_mapping", args=[source.pk, upload.pk])
    assert response.status_code == HTTPStatus.FOUND
    assert response["Location"] == mapping_url

    page = admin_client_logged_in.get(mapping_url).content.decode()
    assert 'name="column:Employee ID" value="externalId"' in page
    columns = {
        f"column:{header}": path
        for header, path in csv_import.default_columns(csv_import.read_csv(HR_CSV.encode()), source).items()
    }
    columns["column:Department"] = "shoeSize"
    refused = admin_client_logged_in.post(mapping_url, {**columns, "preview": "1"}).content.decode()
    assert "is not a directory attribute" in refused
    columns["column:Department"] = "title"

    preview = admin_client_logged_in.post(mapping_url, {**columns, "preview": "1"}).content.decode()
    assert "<strong>2</strong> created, <strong>1</strong> skipped, <strong>1</strong> failed" in preview
    assert "userName is required" in preview
    assert not User.objects.exists()

    done = admin_client_logged_in.post(mapping_url, {**columns, "import": "1"})
    job = InboundJob.objects.get()
    assert done["Location"] == reverse("admin:scim_api_inboundjob_change", args=[job.pk])
    assert (job.origin, job.created_by, job.filename, job.total) == ("csv", "operator", "hr.csv", 4)
    assert not InboundUpload.objects.exists()
    services.jobs_drain(job_id=job.pk)
    assert User.objects.get(employee_number="101").title == "Research"


def test_jobs_records_and_held_leavers_are_browsable_and_approvable(
    admin_client_logged_in, uploader, hr_source
):
    uploader.run(worker_record("1"), worker_record("2"), worker_record("3"))
    source = hr_source[0]
    source.guard_job_max_count = 1
    source.save()
    job = uploader.run(
        worker_record("1", active=False), worker_record("2", active=False), worker_record("3", title=5)
    )

    jobs = admin_client_logged_in.get(reverse("admin:scim_api_inboundjob_changelist")).content.decode()
    detail = admin_client_logged_in.get(
        reverse("admin:scim_api_inboundjob_change", args=[job["id"]])
    ).content.decode()
    records = admin_client_logged_in.get(
        reverse("admin:scim_api_inboundrecord_changelist") + f"?job__id__exact={job['id']}"
    ).content.decode()
    held_url = reverse("admin:scim_api_heldinboundrecord_changelist")
    held = admin_client_logged_in.get(held_url).content.decode()

    assert "1 failed, 2 held" in jobs
    assert "Each record and its outcome" in detail
    assert "title must be a string, got 5" in records
    assert held.count("Held by the guard") == 2
    ids = list(InboundRecord.objects.filter(outcome="held").values_list("pk", flat=True))
    admin_client_logged_in.post(held_url, {"action": "approve", "_selected_action": [str(ids[0])]})
    admin_client_logged_in.post(held_url, {"action": "reject", "_selected_action": [str(ids[1])]})
    services.jobs_drain(job_id=job["id"])
    assert list(User.objects.filter(active=False).values_list("employee_number", flat=True)) == ["1"]
    assert InboundRecord.objects.get(pk=ids[0]).approved_by == "operator"
    record_page = admin_client_logged_in.get(reverse("admin:scim_api_inboundrecord_change", args=[ids[1]]))
    assert record_page.status_code == HTTPStatus.OK
    assert "Rejected by operator" in record_page.content.decode()


def test_scheduled_actions_are_listed_and_can_be_cancelled(admin_client_logged_in, uploader, hr_source):
    source = hr_source[0]
    source.hire_date_source = "urn:contoso:employee:HireDate"
    source.save()
    record = worker_record("1")
    record["urn:contoso:employee"] = {"HireDate": "2999-01-01"}
    uploader.run(record)
    action = InboundScheduledAction.objects.get()
    url = reverse("admin:scim_api_inboundscheduledaction_changelist")

    assert "2999" in admin_client_logged_in.get(url).content.decode()
    admin_client_logged_in.post(url, {"action": "cancel", "_selected_action": [str(action.pk)]})

    action.refresh_from_db()
    assert (action.state, action.detail) == ("cancelled", "Cancelled by operator.")


def test_held_disables_can_be_approved_in_the_admin(admin_client_logged_in, uploader, hr_source):
    source = hr_source[0]
    source.termination_date_source = "urn:contoso:employee:TerminationDate"
    source.save()
    uploader.run(worker_record("1"))
    record = worker_record("1")
    record["urn:contoso:employee"] = {"TerminationDate": "2999-01-01"}
    uploader.run(record)
    action = InboundScheduledAction.objects.get()
    action.state, action.detail = "held", "Held by the guard on its date."
    action.save()
    url = reverse("admin:scim_api_inboundscheduledaction_changelist")

    assert "held by the guard" in admin_client_logged_in.get(url + "?state__exact=held").content.decode()
    admin_client_logged_in.post(url, {"action": "approve", "_selected_action": [str(action.pk)]})

    action.refresh_from_db()
    assert (action.state, action.approved_by) == ("pending", "operator")
    assert action.detail == "Approved by operator."
    assert LogEntry.objects.filter(object_id=str(action.pk), change_message="Approved.").exists()
