"""The agent of one node: wire its pods, run its vrouter program on its dataplane.

It reads its commands and the vrouter topic from the beginning on every start, so a
restarted agent converges from the desired state whatever its dataplane held. Until it
has read up to where both topics ended at start it only folds what it reads (the newest
command per pod, the newest of each program piece), so a replay wires the final state
without the history's churn. The program comes in pieces (see `knm.core.events.vrouter`)
and the dataplane is told which changed, so a change costs what it touches. Dataplane
operations are idempotent, so replaying onto a dataplane that already holds the state
changes nothing. A failure propagates: the supervisor's restart
is the retry.

The CNI plugin's requests (through `services.agent.cni.server`, on other threads) meet
the commands here: an ADD brings the pod's sandbox and waits for the pod's
AttachRequested if it has not come yet; an AttachRequested for a pod whose sandbox is
known wires it there. One lock guards the agent's state and its dataplane calls.
"""

from __future__ import annotations

import logging
import threading
import time

from knm.core.bus.protocol import Bus, Consumer, Record, TopicPartition, from_beginning
from knm.core.deadletters import dead_letter
from knm.core.events.base import Envelope
from knm.core.events.codec import UndecodableError, decode
from knm.core.events.commands import AttachRequested, DetachRequested
from knm.core.events.vrouter import (
    NetworkMembersConfigured,
    NetworkMembersWithdrawn,
    OverlayConfigured,
    VipConfigured,
    VipWithdrawn,
    VrouterConfigured,
    VrouterNodeConfigured,
)
from knm.core.topics import OVERLAY_KEY, Topics, is_node_key
from services.agent.cni.protocol import Attachment, Request
from services.agent.cni.spec import (
    SANDBOX_OCCUPIED,
    TRY_AGAIN_LATER,
    UNKNOWN_CONTAINER,
    WIRING_DIFFERS,
    CniError,
)
from services.agent.dataplane import Dataplane, PodInterface, Sandbox, SandboxInUseError
from services.agent.program import NodeProgram, Piece

log = logging.getLogger("knm.agent")


class Agent:
    def __init__(
        self,
        *,
        node: str,
        bus: Bus,
        topics: Topics,
        dataplane: Dataplane,
        group: str | None = None,
        batch_size: int = 1000,
        cni_wait: float = 10.0,
    ) -> None:
        self.node = node
        self._bus = bus
        self._topics = topics
        self._dataplane = dataplane
        # Every agent reads every partition: one group per node.
        self._group = group or topics.group(f"agent-{node}")
        self._batch_size = batch_size
        self._consumer: Consumer | None = None
        self._vrouter_partition = -1
        self._dead_letters = bus.publisher()
        self._horizon: dict[TopicPartition, int] = {}
        self._read: dict[TopicPartition, int] = {}
        self.replaying = True
        self.undecodable = 0
        # Commands read but not yet executed, the newest per pod, in arrival order.
        self._commands: dict[str, Envelope] = {}
        # This node's vrouter program, folded from its pieces; the pieces changed since
        # the dataplane last ran it (None: the dataplane must converge from scratch, as
        # after a start or a failure); the newest message that changed one (for logs).
        self.program = NodeProgram(node)
        self._pending: set[Piece] | None = None
        self._last_piece: Envelope | None = None
        self.overlay = OverlayConfigured(revision="")
        self._programmed_overlay: str | None = None
        # The newest AttachRequested per pod (folded as read, replay or not), so that a
        # CNI request finds its pod; by uid and by namespace/name.
        self._desired: dict[str, PodInterface] = {}
        self._named: dict[tuple[str, str], str] = {}
        # The sandboxes CNI ADDs gave, per pod uid.
        self._sandboxes: dict[str, Sandbox] = {}
        # The interfaces handed to the dataplane (attached and not detached since).
        self._attached: dict[str, PodInterface] = {}
        # How long a CNI ADD waits for its pod's AttachRequested.
        self._cni_wait = cni_wait
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._closing = False

    def start(self) -> None:
        topics = [self._topics.node_commands, self._topics.vrouter]
        ends = {tp: end for topic in topics for tp, end in self._bus.end_offsets(topic).items()}
        # Both topics are keyed by node: the partitions of this node's keys (and the
        # overlay's) are all it reads, not every node's commands and pieces.
        self._consumer = self._bus.consumer(
            group=self._group,
            topics=topics,
            positions=from_beginning,
            keys={
                self._topics.node_commands: [self.node],
                self._topics.vrouter: [self.node, OVERLAY_KEY],
            },
        )
        read = self._consumer.assignment()
        self._horizon = {tp: end for tp, end in ends.items() if tp in read}
        self._vrouter_partition = self._bus.partition_of(self._topics.vrouter, self.node)

    def step(self, *, timeout: float = 0.0) -> int:
        """Apply one batch of commands and programs; returns the records consumed."""
        assert self._consumer is not None, "start() first"
        records = self._consumer.poll(max_records=self._batch_size, timeout=timeout)
        positions: dict[TopicPartition, int] = {}
        # A piece replaces the one before it: only the newest of a key in a batch is decoded.
        newest = {
            record.key: index
            for index, record in enumerate(records)
            if record.topic == self._topics.vrouter
        }
        with self._lock:
            for index, record in enumerate(records):
                positions[record.position] = record.offset + 1
                if record.topic == self._topics.vrouter and newest[record.key] != index:
                    continue
                message = self._decode(record)
                if message is not None:
                    self._take(message)
            self._read.update(positions)
            if self.replaying and self._replayed():
                self.replaying = False
                log.info(
                    "node state replayed", extra={"node": self.node, "pods": len(self._commands)}
                )
            if not self.replaying:
                self._execute_all()
                self._program()
            self._changed.notify_all()
        if positions:
            # Progress only (the agent replays from the beginning): not waited for.
            self._consumer.commit(positions, wait=False)
        return len(records)

    def _take(self, message: Envelope) -> None:
        payload = message.payload
        match payload:
            case AttachRequested() | DetachRequested() if payload.node == self.node:
                # Only a pod's newest command counts: a pod created and deleted within
                # one batch (or one replay) is never wired.
                self._commands.pop(payload.pod_uid, None)
                self._commands[payload.pod_uid] = message
                self._want(payload)
            case (
                VrouterConfigured()
                | VrouterNodeConfigured()
                | NetworkMembersConfigured()
                | NetworkMembersWithdrawn()
                | VipConfigured()
                | VipWithdrawn()
            ) if payload.node == self.node:
                changed = self.program.take(payload)
                if changed:
                    self._last_piece = message
                    if self._pending is not None:
                        self._pending |= changed
            case OverlayConfigured():
                self.overlay = payload
            case _:
                pass

    def _execute_all(self) -> None:
        commands, self._commands = self._commands, {}
        pending = list(commands.items())
        for done, (_, message) in enumerate(pending):
            try:
                self._execute(message)
            except BaseException:
                # Kept for the next step to retry, this one included.
                self._commands = {**dict(pending[done:]), **self._commands}
                raise

    def _want(self, command: AttachRequested | DetachRequested) -> None:
        old = self._desired.pop(command.pod_uid, None)
        if old is not None and self._named.get((old.namespace, old.name)) == old.pod_uid:
            del self._named[(old.namespace, old.name)]
        if isinstance(command, AttachRequested):
            iface = PodInterface.of(command)
            self._desired[command.pod_uid] = iface
            self._named[(iface.namespace, iface.name)] = iface.pod_uid
        else:
            self._sandboxes.pop(command.pod_uid, None)

    def _replayed(self) -> bool:
        return all(self._read.get(tp, 0) >= end for tp, end in self._horizon.items())

    def _decode(self, record: Record) -> Envelope | None:
        # Both topics are keyed by node: skip other nodes' messages without decoding them.
        if record.key != OVERLAY_KEY and not is_node_key(record.key, self.node):
            return None
        # A node's pieces all go to its node's partition, in order; one found elsewhere
        # was placed by an earlier layout (key by key) and may be older than its twin.
        if (
            record.topic == self._topics.vrouter
            and record.key != OVERLAY_KEY
            and record.partition != self._vrouter_partition
        ):
            return None
        try:
            return decode(record.value)
        except UndecodableError as error:
            self.undecodable += 1
            # A replay meets the poison of earlier runs again: it was dead-lettered then.
            if not self.replaying:
                self._dead_letters.publish(
                    [
                        dead_letter(
                            record, reason=error.reason, consumer=self._group, topics=self._topics
                        )
                    ]
                )
            return None

    def _execute(self, message: Envelope) -> None:
        command = message.payload
        extra = {"event_id": str(message.id), "key": message.key, "node": self.node}
        if isinstance(command, AttachRequested):
            iface = PodInterface.of(command)
            sandbox = self._sandboxes.get(command.pod_uid)
            self._dataplane.attach(iface, sandbox)
            self._attached[iface.pod_uid] = iface
            log.info(
                "interface attached",
                extra={**extra, "pod": _key(iface), "ip": command.ip, "sandbox": _netns(sandbox)},
            )
        elif isinstance(command, DetachRequested):
            self._dataplane.detach(command.pod_uid)
            self._attached.pop(command.pod_uid, None)
            log.info(
                "interface detached",
                extra={**extra, "pod": f"{command.namespace}/{command.name}"},
            )

    def _program(self) -> None:
        # Without this node's own piece there is nothing to route for; the applier
        # sends it as soon as the node has a pod.
        if not self.program.ready:
            return
        pending = self._pending
        if (
            pending is not None
            and not pending
            and self.overlay.revision == self._programmed_overlay
        ):
            return
        try:
            self._dataplane.program(
                self.program, None if pending is None else frozenset(pending), self.overlay
            )
        except BaseException:
            # Whatever the dataplane holds now, the retry converges it from scratch.
            self._pending = None
            raise
        self._pending = set()
        self._programmed_overlay = self.overlay.revision
        message = self._last_piece
        log.info(
            "vrouter programmed",
            extra={
                "event_id": str(message.id) if message is not None else None,
                "key": message.key if message is not None else None,
                "node": self.node,
                "pieces": "all" if pending is None else len(pending),
                "vips": len(self.program.vips),
                "overlay_revision": self.overlay.revision,
            },
        )

    @property
    def interfaces(self) -> dict[str, PodInterface]:
        """The interfaces this agent handed to its dataplane, by pod uid."""
        with self._lock:
            return dict(self._attached)

    @property
    def sandboxes(self) -> dict[str, Sandbox]:
        with self._lock:
            return dict(self._sandboxes)

    # -- CNI: called by the socket server's threads --------------------------------------

    def cni_add(self, request: Request) -> Attachment:
        """Wire the pod into the sandbox the runtime made; waits for the pod's command."""
        with self._lock:
            iface = self._await_pod(request, wait_for_command=True)
            if iface is None:
                raise CniError(
                    TRY_AGAIN_LATER,
                    f"pod {request.pod_key} has no interface on node {self.node} yet",
                    f"no AttachRequested within {self._cni_wait} s",
                )
            sandbox = _sandbox(request)
            previous = self._sandboxes.get(iface.pod_uid)
            self._sandboxes[iface.pod_uid] = sandbox
            try:
                # Idempotent: a retried ADD finds the pod wired there and changes nothing.
                self._dataplane.attach(iface, sandbox)
            except SandboxInUseError as error:
                self._restore(iface.pod_uid, previous)
                raise CniError(SANDBOX_OCCUPIED, str(error)) from None
            except BaseException:
                # Wired halfway at most: no sandbox of this pod is known to be wired.
                self._sandboxes.pop(iface.pod_uid, None)
                raise
            self._attached[iface.pod_uid] = iface
            log.info(
                "pod wired for CNI ADD",
                extra={
                    "node": self.node,
                    "pod": _key(iface),
                    "ip": iface.ip,
                    "container": request.container_id,
                },
            )
            return _attachment(iface)

    def cni_check(self, request: Request) -> Attachment:
        with self._lock:
            iface = self._await_pod(request, wait_for_command=False)
            if iface is None:
                raise CniError(UNKNOWN_CONTAINER, f"pod {request.pod_key} is not on {self.node}")
            sandbox = _sandbox(request)
            known = self._sandboxes.get(iface.pod_uid)
            problems = self._dataplane.check(iface, sandbox)
            if problems and known != sandbox:
                raise CniError(
                    UNKNOWN_CONTAINER,
                    f"container {request.container_id} of pod {request.pod_key} is not wired",
                    "; ".join(problems),
                )
            if problems:
                raise CniError(
                    WIRING_DIFFERS,
                    f"the wiring of pod {request.pod_key} differs",
                    "; ".join(problems),
                )
            # A restarted agent learns the sandbox of a pod it adopted.
            self._sandboxes[iface.pod_uid] = sandbox
            return _attachment(iface)

    def cni_del(self, request: Request) -> None:
        """Unwire the pod from the sandbox; success when there is nothing to unwire."""
        with self._lock:
            iface = self._await_pod(request, wait_for_command=False)
            uid = iface.pod_uid if iface is not None else self._uid_of_container(request)
            if uid is None:
                return
            known = self._sandboxes.get(uid)
            if known is not None and known.container_id != request.container_id:
                # The DEL of a sandbox the pod has since left: its wiring is another's.
                return
            self._dataplane.detach(uid)
            self._sandboxes.pop(uid, None)
            self._attached.pop(uid, None)
            log.info(
                "pod unwired for CNI DEL",
                extra={
                    "node": self.node,
                    "pod": request.pod_key,
                    "container": request.container_id,
                },
            )

    def _await_pod(self, request: Request, *, wait_for_command: bool) -> PodInterface | None:
        """The pod's desired interface. Waits while the agent is replaying (its answer
        would be premature) and, for an ADD, until the pod's command comes; None if the
        wait runs out or the pod is unknown."""
        deadline = time.monotonic() + self._cni_wait
        while True:
            if self._closing:
                raise CniError(TRY_AGAIN_LATER, f"the agent of {self.node} is stopping")
            iface = self._lookup(request) if not self.replaying else None
            if iface is not None or (not self.replaying and not wait_for_command):
                return iface
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if self.replaying and not wait_for_command:
                    raise CniError(TRY_AGAIN_LATER, f"the agent of {self.node} is starting")
                return None
            self._changed.wait(remaining)

    def _restore(self, uid: str, sandbox: Sandbox | None) -> None:
        if sandbox is None:
            self._sandboxes.pop(uid, None)
        else:
            self._sandboxes[uid] = sandbox

    def _lookup(self, request: Request) -> PodInterface | None:
        pod = request.pod
        if pod.uid:
            return self._desired.get(pod.uid)
        if pod.namespace and pod.name:
            uid = self._named.get((pod.namespace, pod.name))
            return self._desired.get(uid) if uid is not None else None
        return None

    def _uid_of_container(self, request: Request) -> str | None:
        for uid, sandbox in self._sandboxes.items():
            if sandbox.container_id == request.container_id:
                return uid
        return None

    def run(self, stop: threading.Event, *, poll_timeout: float = 0.5) -> None:
        while not stop.is_set():
            self.step(timeout=poll_timeout)

    def close(self) -> None:
        with self._lock:
            self._closing = True
            self._changed.notify_all()
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
            self._dataplane.close()
        self._dead_letters.close()


def _sandbox(request: Request) -> Sandbox:
    return Sandbox(container_id=request.container_id, netns=request.netns, ifname=request.ifname)


def _attachment(iface: PodInterface) -> Attachment:
    return Attachment(host_ifname=iface.ifname, ip=iface.ip, mac=iface.mac, gateway=iface.gateway)


def _key(iface: PodInterface) -> str:
    return f"{iface.namespace}/{iface.name}"


def _netns(sandbox: Sandbox | None) -> str | None:
    return sandbox.netns if sandbox is not None else None
