"""The watcher publishing what changed in the manifests onto a bus."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from knm.core.bus.memory import MemoryBus
from knm.core.events.base import Envelope
from knm.core.events.codec import decode
from knm.core.events.facts import (
    ControllerDeleted,
    ControllerObserved,
    NamespaceObserved,
    NodeObserved,
    PodDeleted,
    PodObserved,
    ServiceDeleted,
    ServiceObserved,
)
from knm.core.topics import Topics
from services.watcher.errors import BadManifestError
from services.watcher.service import Watcher
from services.watcher.source import ManifestSource
from tests.services.watcher.builders import pod, rc, service, write_yaml

TOPICS = Topics(prefix="test.")
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def clock() -> datetime:
    return NOW


def watcher_on(bus: MemoryBus, folder: Path, *, settle: bool = False) -> Watcher:
    return Watcher(
        source=ManifestSource([folder], nodes=2),
        publisher=bus.publisher(),
        topics=TOPICS,
        clock=clock,
        settle=settle,
    )


def published(bus: MemoryBus) -> list[Envelope]:
    return [decode(record.value) for record in bus.records(TOPICS.facts)]


def shop(folder: Path, *, replicas: int = 2, with_service: bool = True) -> Path:
    documents = [rc("web", replicas=replicas, namespace="shop", labels={"name": "web"})]
    if with_service:
        documents.append(service("web", namespace="shop", selector={"name": "web"}))
    return write_yaml(folder / "shop.yaml", *documents)


def test_publishes_every_fact_at_first(tmp_path: Path) -> None:
    shop(tmp_path)
    bus = MemoryBus(partitions=1)
    watcher = watcher_on(bus, tmp_path)

    count = watcher.publish_changes()

    messages = published(bus)
    assert count == len(messages) == 7
    assert [type(m.payload) for m in messages] == [
        NamespaceObserved,
        NodeObserved,
        NodeObserved,
        ControllerObserved,
        ServiceObserved,
        PodObserved,
        PodObserved,
    ]
    snapshot = ManifestSource([tmp_path], nodes=2).snapshot()
    assert [(m.key, m.payload) for m in messages] == [(o.key, o.event) for o in snapshot]
    assert [r.key for r in bus.records(TOPICS.facts)] == [o.partition_key for o in snapshot]
    for message in messages:
        assert message.type == message.payload.TYPE
        assert message.occurred_at == NOW
        assert message.source_version is None
    assert len({m.id for m in messages}) == 7


def test_nothing_changed_nothing_published(tmp_path: Path) -> None:
    shop(tmp_path)
    bus = MemoryBus()
    watcher = watcher_on(bus, tmp_path)
    watcher.publish_changes()

    assert watcher.publish_changes() == 0
    assert len(bus.records(TOPICS.facts)) == 7


def test_a_changed_file_publishes_the_changes_and_deletions(tmp_path: Path) -> None:
    shop(tmp_path, replicas=2)
    bus = MemoryBus(partitions=1)
    watcher = watcher_on(bus, tmp_path)
    watcher.publish_changes()
    before = published(bus)
    kept, dropped = (m.payload for m in before[-2:])
    assert isinstance(kept, PodObserved)
    assert isinstance(dropped, PodObserved)

    shop(tmp_path, replicas=1, with_service=False)
    count = watcher.publish_changes()

    changes = published(bus)[len(before) :]
    assert count == len(changes) == 3
    assert [(m.key, m.payload) for m in changes] == [
        (
            f"Pod/shop/{dropped.name}",
            PodDeleted(uid=dropped.uid, namespace="shop", name=dropped.name),
        ),
        (
            "Service/shop/web",
            ServiceDeleted(uid=before[4].payload.uid, namespace="shop", name="web"),  # type: ignore[attr-defined]
        ),
        ("ReplicationController/shop/web", before[3].payload.model_copy(update={"replicas": 1})),
    ]


def test_deleting_every_file_deletes_all_but_the_simulated_nodes(tmp_path: Path) -> None:
    path = shop(tmp_path)
    bus = MemoryBus(partitions=1)
    watcher = watcher_on(bus, tmp_path)
    watcher.publish_changes()

    path.unlink()

    assert watcher.publish_changes() == 5
    assert [type(m.payload).__name__ for m in published(bus)[7:]] == [
        "PodDeleted",
        "PodDeleted",
        "ServiceDeleted",
        "ControllerDeleted",
        "NamespaceDeleted",
    ]
    assert watcher.publish_changes() == 0


def test_settling_publishes_a_change_once_two_reads_agree(tmp_path: Path) -> None:
    manifest = shop(tmp_path)
    bus = MemoryBus(partitions=1)
    watcher = watcher_on(bus, tmp_path, settle=True)
    assert watcher.publish_changes() == 7  # the first read is not held back

    manifest.write_text("")  # caught halfway through a rewrite
    assert watcher.publish_changes() == 0
    shop(tmp_path)  # the rewrite finished with what was there
    assert watcher.publish_changes() == 0
    assert watcher.publish_changes() == 0

    shop(tmp_path, replicas=3)
    assert watcher.publish_changes() == 0
    assert watcher.publish_changes() == 2
    assert watcher.publish_changes() == 0
    assert not any(isinstance(m.payload, (PodDeleted, ServiceDeleted)) for m in published(bus))


def test_ids_are_the_same_for_a_second_watcher(tmp_path: Path) -> None:
    shop(tmp_path)
    first, second = MemoryBus(partitions=1), MemoryBus(partitions=1)

    watcher_on(first, tmp_path).publish_changes()
    watcher_on(second, tmp_path).publish_changes()

    assert [m.id for m in published(first)] == [m.id for m in published(second)]
    assert [r.value for r in first.records(TOPICS.facts)] == [
        r.value for r in second.records(TOPICS.facts)
    ]


def test_the_same_history_gives_the_same_ids(tmp_path: Path) -> None:
    def history(bus: MemoryBus) -> list[str]:
        shop(tmp_path, replicas=2)
        watcher = watcher_on(bus, tmp_path)
        watcher.publish_changes()
        shop(tmp_path, replicas=3, with_service=False)
        watcher.publish_changes()
        return [str(m.id) for m in published(bus)]

    assert history(MemoryBus()) == history(MemoryBus())


def test_a_return_to_an_earlier_state_gets_new_ids(tmp_path: Path) -> None:
    """Consumers skip ids they have applied: a fact that repeats an old one must not."""
    bus = MemoryBus(partitions=1)
    write_yaml(tmp_path / "a.yaml", pod("web", labels={"v": "1"}))
    watcher = watcher_on(bus, tmp_path)
    watcher.publish_changes()
    write_yaml(tmp_path / "a.yaml", pod("web", labels={"v": "2"}))
    watcher.publish_changes()
    write_yaml(tmp_path / "a.yaml", pod("web", labels={"v": "1"}))
    watcher.publish_changes()
    (tmp_path / "a.yaml").unlink()
    watcher.publish_changes()
    write_yaml(tmp_path / "a.yaml", pod("web", labels={"v": "1"}))
    watcher.publish_changes()

    pod_facts = [m for m in published(bus) if m.key == "Pod/default/web"]
    assert [type(m.payload).__name__ for m in pod_facts] == [
        "PodObserved",
        "PodObserved",
        "PodObserved",
        "PodDeleted",
        "PodObserved",
    ]
    assert pod_facts[0].payload == pod_facts[2].payload == pod_facts[4].payload
    assert len({m.id for m in published(bus)}) == len(published(bus))


# ---- running -----------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], *, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_run_publishes_at_once_and_stops(tmp_path: Path) -> None:
    shop(tmp_path)
    bus = MemoryBus()
    stop = threading.Event()
    stop.set()

    watcher_on(bus, tmp_path).run(stop, interval=60)

    assert len(bus.records(TOPICS.facts)) == 7


def test_run_fails_when_the_first_read_fails(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("kind: [\n")

    with pytest.raises(BadManifestError):
        watcher_on(MemoryBus(), tmp_path).run(threading.Event(), interval=0.01)


def test_run_rereads_and_survives_a_broken_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shop(tmp_path, replicas=2)
    bus = MemoryBus(partitions=1)
    # Without settling, a read of shop.yaml halfway through its rewrite below publishes
    # deletions: this test failed that way.
    watcher = watcher_on(bus, tmp_path, settle=True)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), kwargs={"interval": 0.01})

    def errors() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.levelno == logging.ERROR]

    with caplog.at_level(logging.INFO, logger="knm.watcher"):
        thread.start()
        try:
            wait_for(lambda: len(bus.records(TOPICS.facts)) == 7)
            broken = tmp_path / "broken.yaml"
            broken.write_text("kind: Pod\nmetadata: {name: [\n")
            wait_for(lambda: bool(errors()))
            # Several re-reads fail the same way; each problem is logged once.
            time.sleep(0.1)
            broken.unlink()
            shop(tmp_path, replicas=3)
            wait_for(lambda: len(bus.records(TOPICS.facts)) == 9)
        finally:
            stop.set()
            thread.join(timeout=5)

    assert not thread.is_alive()
    (error,) = errors()
    assert error.getMessage().startswith(
        f"cannot read the manifests, keeping the last snapshot: {broken}: invalid YAML at line 3"
    )
    assert error.error.startswith(str(broken))  # type: ignore[attr-defined]
    assert "the manifests read cleanly again" in [r.getMessage() for r in caplog.records]
    assert [type(m.payload) for m in published(bus)[7:]] == [ControllerObserved, PodObserved]
    assert not any(isinstance(m.payload, ControllerDeleted) for m in published(bus))
