"""The live mirror verify re-checks against: waiting until it confirmed a source position.

Contract: :meth:`Mirror.wait` only reads the slot's ``confirmed_flush_lsn`` (one autocommit source
connection per wait, closed before it returns); it never writes, and it gives up at one deadline
shared by every wait of a run, counted from the first.  See :mod:`replicator.verify.run` (point 3)
for why a confirmed position makes a difference on the target a real one.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Optional

from ..model import Lsn
from ..source import slot as slots
from ..source import snapshot

log = logging.getLogger("replicator.verify.run")  # its name before the split: log lines unchanged


class Mirror:
    """The running mirror, if any: waits until it confirmed a source position."""

    def __init__(self, dsn: str, slot: Optional[str], wait_seconds: float):
        self.dsn, self.slot, self.wait_seconds = dsn, slot, wait_seconds
        self.deadline: Optional[float] = None  # from the first wait on (scans may take long)

    def wait(self, lsn: Lsn) -> bool:
        """True once the mirror confirmed ``lsn`` (it confirms only what the target committed;
        an idle mirror confirms the WAL end), or when there is no mirror; False after the
        deadline.  A mirror that stopped meanwhile leaves a target that no longer moves."""
        if self.slot is None:
            return True
        if self.deadline is None:
            self.deadline = time.monotonic() + self.wait_seconds
        with contextlib.closing(snapshot.connect(self.dsn, autocommit=True)) as c:
            while True:
                info = slots.slot_info(c, self.slot)
                if info is None or not info["active"]:
                    log.info("the mirror stopped: the target no longer moves")
                    self.slot = None
                    return True
                if Lsn.parse(info["confirmed_flush_lsn"]) >= lsn:
                    return True
                if time.monotonic() > self.deadline:
                    return False
                time.sleep(0.05)
