"""Who a client is. The proxy derives the session's bus client id from it
(``system/group/instance#area``), so keep ``instance`` unique among live clients and stable
across restarts of one instance: a reconnect then resumes its subscriptions."""

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Identity:
    system: str
    area: str
    group: str
    instance: str

    def to_json(self):
        return asdict(self)
