"""The cluster as an informer sees it: list each kind once, then watch it from the list's
resourceVersion, keeping an up-to-date cache of every object.

- A watch that ends (the server's timeout) resumes from the last resourceVersion seen,
  bookmarks included; one whose connection fails resumes after a backoff.
- 410 Gone (the version was compacted away) relists the kind and replaces its cache, so
  what vanished meanwhile is missing from the next snapshot: the watcher's diff against
  what it published turns that into deletions.
- Every `resync` seconds each kind is relisted the same way; the diff publishes only
  what differs.

The cache holds facts, not raw objects. A pod's owner chain (ReplicaSet, then its
Deployment) is resolved at snapshot time from the controllers' caches, so a pod fact
changes when its owners arrive, whatever order the kinds were listed in.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from knm.core.events.facts import ControllerObserved, OwnerReference, PodObserved
from services.watcher.live import RESOURCES, Api, ExpiredError, Resource
from services.watcher.source import Deletion, ObservedObject

log = logging.getLogger("knm.watcher")

# No real chain is deeper (Deployment > ReplicaSet > Pod); a cycle stops here too.
_MAX_OWNER_DEPTH = 8


@dataclass
class Backoff:
    """Exponential with full jitter, as client-go's reflector waits between failures."""

    initial: float = 0.2
    ceiling: float = 10.0
    _next: float = field(default=0.0, init=False)

    def next(self) -> float:
        self._next = min(self.ceiling, self._next * 2 if self._next else self.initial)
        return random.uniform(self._next / 2, self._next)

    def reset(self) -> None:
        self._next = 0.0


@dataclass
class Counters:
    events: int = 0
    bookmarks: int = 0
    reconnects: int = 0
    relists: int = 0
    expired: int = 0
    resyncs: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "watch_events_total": self.events,
            "watch_bookmarks_total": self.bookmarks,
            "watch_reconnects_total": self.reconnects,
            "relists_total": self.relists,
            "watch_expired_total": self.expired,
            "resyncs_total": self.resyncs,
        }


class Informer:
    """A Source (see services.watcher.service) over a Kubernetes API server."""

    def __init__(
        self,
        api: Api,
        *,
        resources: Iterable[Resource] = RESOURCES,
        resync: float = 300.0,
        watch_timeout: int = 240,
        backoff_ceiling: float = 10.0,
    ) -> None:
        self._api = api
        self._resources = tuple(resources)
        self._resync = resync
        self._watch_timeout = watch_timeout
        self._backoff_ceiling = backoff_ceiling
        self._lock = threading.Lock()
        self._caches: dict[str, dict[str, ObservedObject]] = {r.plural: {} for r in self._resources}
        self._versions: dict[str, str] = {}
        self._changed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.counters = Counters()

    # ---- the Source side --------------------------------------------------------------

    def load(self) -> None:
        """List every kind into the cache (raising what the API raises); no watch."""
        for resource in self._resources:
            self._relist(resource)

    def start(self) -> None:
        """List every kind (raising what the API raises), then watch each in a thread."""
        if self._threads:
            return
        self.load()
        for resource in self._resources:
            thread = threading.Thread(
                target=self._run, args=(resource,), name=f"watch-{resource.plural}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """End the watch threads (their connections are shut down)."""
        self._stop.set()
        self._changed.set()
        self._api.close()

    def snapshot(self) -> list[ObservedObject]:
        """Every cached object, pods and controllers with their whole owner chains."""
        with self._lock:
            objects = [obj for cache in self._caches.values() for obj in cache.values()]
        controllers = {
            obj.event.uid: obj.event for obj in objects if isinstance(obj.event, ControllerObserved)
        }
        return [_with_chain(obj, controllers) for obj in objects]

    def wait(self, timeout: float) -> bool:
        """Until something changed since the last call (True) or `timeout` passed."""
        changed = self._changed.wait(timeout)
        self._changed.clear()
        return changed

    @property
    def versions(self) -> dict[str, str]:
        """The resourceVersion each kind's watch is at."""
        with self._lock:
            return dict(self._versions)

    # ---- the watch threads ------------------------------------------------------------

    def _run(self, resource: Resource) -> None:
        backoff = Backoff(ceiling=self._backoff_ceiling)
        next_resync = time.monotonic() + self._resync
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_resync:
                    self.counters.resyncs += 1
                    self._relist(resource)
                    next_resync = time.monotonic() + self._resync
                self._watch(resource, backoff)
            except ExpiredError as error:
                self.counters.expired += 1
                log.info(
                    "watch expired (410 Gone); relisting",
                    extra={"resource": resource.plural, "error": str(error)},
                )
                self._retrying(resource, backoff)
            except Exception as error:
                self.counters.reconnects += 1
                delay = backoff.next()
                log.warning(
                    "watch failed; resuming",
                    extra={
                        "resource": resource.plural,
                        "error": _one_line(error),
                        "retry_in_s": round(delay, 2),
                        "resource_version": self._versions.get(resource.plural),
                    },
                )
                self._stop.wait(delay)

    def _watch(self, resource: Resource, backoff: Backoff) -> None:
        """One watch, until the server ends it or it fails; events go into the cache."""
        timeout = max(1, int(min(self._watch_timeout, self._resync) * random.uniform(0.8, 1.0)))
        since = self._versions[resource.plural]
        for event in self._api.watch(resource, resource_version=since, timeout_seconds=timeout):
            backoff.reset()
            if self._stop.is_set():
                return
            with self._lock:
                self._versions[resource.plural] = event.resource_version
                cache = self._caches[resource.plural]
                match event.change:
                    case None:
                        self.counters.bookmarks += 1
                        continue
                    case Deletion(key=key):
                        cache.pop(key, None)
                    case ObservedObject(key=key) as found:
                        cache[key] = found
                self.counters.events += 1
            self._changed.set()

    def _retrying(self, resource: Resource, backoff: Backoff) -> None:
        """Relist until it works or the informer stops."""
        while not self._stop.is_set():
            try:
                self._relist(resource)
                return
            except Exception as error:
                self.counters.reconnects += 1
                delay = backoff.next()
                log.warning(
                    "relist failed; retrying",
                    extra={"resource": resource.plural, "error": _one_line(error)},
                )
                self._stop.wait(delay)

    def _relist(self, resource: Resource) -> None:
        listing = self._api.list(resource)
        with self._lock:
            self._caches[resource.plural] = {obj.key: obj for obj in listing.objects}
            self._versions[resource.plural] = listing.resource_version
        self.counters.relists += 1
        self._changed.set()


def _with_chain(obj: ObservedObject, controllers: dict[str, ControllerObserved]) -> ObservedObject:
    """The object with its owner chain resolved through `controllers` (by uid)."""
    event = obj.event
    if not isinstance(event, PodObserved | ControllerObserved) or not event.owners:
        return obj
    chain = chain_of(event.owners[0], controllers)
    if chain == event.owners:
        return obj
    resolved = event.model_copy(update={"owners": chain})
    return ObservedObject(obj.key, obj.partition_key, resolved, obj.source_version)


def chain_of(
    owner: OwnerReference, controllers: dict[str, ControllerObserved]
) -> tuple[OwnerReference, ...]:
    """`owner`, then its owner, and so on, as far as the cached controllers tell."""
    chain = [owner]
    seen = {owner.uid}
    while len(chain) < _MAX_OWNER_DEPTH:
        found = controllers.get(chain[-1].uid)
        if found is None or not found.owners:
            break
        parent = found.owners[0]
        if parent.uid in seen:
            break
        chain.append(parent)
        seen.add(parent.uid)
    return tuple(chain)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]
