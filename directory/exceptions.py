"""Domain errors raised by directory services. Front doors map them to their own protocol."""


class DirectoryError(Exception):
    """Base of every error a directory service raises on purpose."""


class ObjectNotFound(DirectoryError):
    pass


class UniquenessConflict(DirectoryError):
    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class InvalidValue(DirectoryError):
    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class MembershipCycle(InvalidValue):
    """Adding the member would make a group contain itself, directly or through nesting."""


class VersionMismatch(DirectoryError):
    """The caller's expected version is not the current one (a stale If-Match)."""

    def __init__(self, message: str, *, current_version: int | None) -> None:
        super().__init__(message)
        self.current_version = current_version
