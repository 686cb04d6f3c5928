"""The `contrail` backend: every sync is one full reconcile of the VNC config API.

Level-triggered: whatever intents made the model dirty, the whole desired set is built
and diffed against what Contrail holds, so drift and orphans are repaired on every sync,
and the applier also syncs every `resync_interval` seconds without new intents.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from ipaddress import IPv4Network

from knm.core.events.base import Event
from services.applier.backend import Cause
from services.applier.contrail.client import VncClient
from services.applier.contrail.objects import Owner, desired_objects
from services.applier.contrail.reconcile import Reconciler, Report
from services.applier.model import DesiredModel, Dirty

log = logging.getLogger("knm.applier.contrail")


class ContrailBackend:
    def __init__(
        self,
        *,
        client: VncClient,
        cluster: str,
        pod_pools: Sequence[IPv4Network],
        service_pools: Sequence[IPv4Network],
    ) -> None:
        self.client = client
        self._owner = Owner(cluster=cluster)
        self._pod_pools = tuple(pod_pools)
        self._service_pools = tuple(service_pools)
        self._reconciler = Reconciler(client=client, owner=self._owner)
        self.last: Report | None = None
        self.reconciles = 0

    def reconcile(self, model: DesiredModel, *, dry_run: bool = False) -> Report:
        started = time.perf_counter()
        desired = desired_objects(
            model,
            owner=self._owner,
            pod_pools=self._pod_pools,
            service_pools=self._service_pools,
        )
        report = self._reconciler.reconcile(desired, dry_run=dry_run)
        self.last = report
        self.reconciles += 1
        log.info(
            "contrail reconciled",
            extra={
                "desired": len(desired),
                "listed": report.listed,
                "writes": len(report.writes),
                "foreign": len(report.foreign),
                "refused_deletes": len(report.refused_deletes),
                "dry_run": dry_run,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
        return report

    def recall(self, key: str, payload: Event) -> None:
        # What this backend wrote lives in Contrail, and each reconcile lists it there.
        del key, payload

    def sync(self, model: DesiredModel, dirty: Dirty, *, cause: Cause) -> None:
        del dirty, cause  # every sync converges everything
        self.reconcile(model)

    def close(self) -> None:
        return None
