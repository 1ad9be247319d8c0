"""An in-process Flower Grid: real strategies and real ClientApp handlers, no Ray, no sockets.

Used by tests (hostile clients, message audits) and by benchmarks that would only pay
Ray's overhead on a small machine (``simulations.benchmark_wearables``).

Every message crosses the grid serialised to protobuf bytes and parsed back, as it would
cross the SuperLink, so a node never shares an object with the server; ``traffic`` keeps
each parsed message (both directions) for audits. ``tamper`` lets a test turn one node
hostile by rewriting its replies.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage  # pylint: disable=no-name-in-module
from flwr.serverapp import Grid
from flwr.supercore.run import Run


def wire(msg: Message) -> Message:
    """The message as the other side receives it: serialised and parsed back."""
    return message_from_proto(ProtoMessage.FromString(message_to_proto(msg).SerializeToString()))


@dataclass
class LocalGrid(Grid):
    """Nodes ``node_ids[i]`` run ``app`` with partition ``i`` of ``len(node_ids)``, one after another.

    ``node_configs`` replaces a node's config (e.g. partition 7 of 15, or ``client-kind``);
    ``cache-dir`` is added when absent.
    """

    app: ClientApp
    node_ids: list[int]
    cache_root: Path
    tamper: Callable[[int, Message, Message], Message] | None = None  # (node, request, reply) -> reply
    node_configs: dict[int, dict] | None = None
    traffic: list[tuple[str, Message]] = field(default_factory=list)  # ("down"|"up", message)
    contexts: dict[int, Context] = field(init=False)
    _replies: dict[str, Message] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.node_ids)
        configs = self.node_configs or {}
        self.contexts = {
            node: Context(
                run_id=1,
                node_id=node,
                state=RecordDict(),
                run_config={},
                node_config={
                    "cache-dir": str(self.cache_root / f"node-{node}"),
                    **configs.get(node, {"partition-id": i, "num-partitions": n}),
                },
            )
            for i, node in enumerate(self.node_ids)
        }
        self._run = Run.create_empty(1)

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.node_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex  # as the SuperLink's grid does
            self._replies[msg.metadata.message_id] = self._deliver(msg)
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))

    def _deliver(self, msg: Message) -> Message:
        node = msg.metadata.dst_node_id
        received = wire(msg)
        self.traffic.append(("down", received))
        try:
            reply = self.app(received, self.contexts[node])
        except Exception as exc:  # a SuperNode turns a ClientApp exception into an error reply
            error = Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{type(exc).__name__}: {exc}")
            reply = Message(error, reply_to=received)
        if self.tamper is not None:
            reply = self.tamper(node, received, reply)
        back = wire(reply)
        self.traffic.append(("up", back))
        return back


@contextmanager
def server_identity() -> Iterator[None]:
    """The task identity Flower gives a ServerApp process; Messages cannot be built without it."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    try:
        yield
    finally:
        # Flower's own reset (its attributes are typed int, but None is what "no task" is)
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = None, None, None  # type: ignore[assignment]
