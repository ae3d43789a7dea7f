from django.conf import settings
from django.http import HttpRequest


def instance(request: HttpRequest) -> dict[str, bool]:
    """Lets templates mark a development instance (DEBUG on) as such."""
    return {"debug_instance": bool(settings.DEBUG)}
