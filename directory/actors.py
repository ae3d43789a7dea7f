"""Who is making a change: recorded on every AuditEntry."""

from dataclasses import dataclass

from directory.models import AuditEntry


@dataclass(frozen=True)
class Actor:
    type: AuditEntry.ActorType
    id: str = ""
    name: str = ""

    @classmethod
    def system(cls, name: str = "system") -> "Actor":
        return cls(type=AuditEntry.ActorType.SYSTEM, name=name)

    @classmethod
    def operator(cls, *, id: object, name: str) -> "Actor":
        return cls(type=AuditEntry.ActorType.OPERATOR, id=str(id), name=name)

    @classmethod
    def scim_client(cls, *, id: object, name: str) -> "Actor":
        return cls(type=AuditEntry.ActorType.SCIM_CLIENT, id=str(id), name=name)
