from directory.models import User
from tests.scim_api.inbound.conftest import outcomes, worker_record


def test_smoke(uploader):
    job = uploader.run(worker_record("1"), worker_record("2", manager="1"))
    print(job)
    assert outcomes(job) == ["created", "created"]
    assert User.objects.get(employee_number="2").manager.employee_number == "1"
    again = uploader.run(worker_record("1"), worker_record("2", manager="1"))
    assert outcomes(again) == ["unchanged", "unchanged"]
