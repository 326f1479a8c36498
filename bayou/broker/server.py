"""``bayou serve``: open the storage, listen, serve until SIGINT/SIGTERM, shut down cleanly.

Theory of operation
-------------------
One process, one event loop (uvloop when installed).  ``Broker.start`` opens the log manager
(recovering every partition), then the listeners; one line lists every listener.  Background
tasks flush partitions whose ``flush.ms`` is due and write recovery checkpoints, both in worker
threads, and close connections whose unfinished request stalled (``RequestBudget.run``).  The
open-files limit is raised to the hard limit when the broker is built (``fd_limit.py``).
``Broker.stop`` closes the listeners, wakes long-polling fetches, lets in-flight requests
answer (bounded), drains pending fsyncs and closes the storage, which writes its checkpoints
and clean-shutdown marker.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from bayou.broker.connection import KafkaConnection
from bayou.broker.context import BrokerState, now_ms
from bayou.broker.fd_limit import OpenFilesWatch, raise_open_files_limit
from bayou.broker.groups import GroupDriver, GroupSettings
from bayou.config import BrokerConfig
from bayou.gateways.amqp import AmqpGateway
from bayou.gateways.http import HttpGateway
from bayou.gateways.mqtt import MqttGateway
from bayou.storage import LogManager
from bayou.storage.dir_lock import DataDirectoryInUse

log = logging.getLogger("bayou")

FLUSH_CHECK_INTERVAL_S = 0.05
CHECKPOINT_INTERVAL_S = 5.0
SHUTDOWN_GRACE_S = 10.0


class Broker:
    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.logs = LogManager(config.data_dir, config.topic_defaults, now_ms)
        self.state = BrokerState(config, self.logs)
        self._servers: list[asyncio.AbstractServer] = []
        self._connections: set[KafkaConnection] = set()
        self._background: list[asyncio.Task[None]] = []
        self.http: HttpGateway | None = None  # None when http_port is 0
        self.mqtt: MqttGateway | None = None  # None when mqtt_port is 0
        self.amqp: AmqpGateway | None = None  # None when amqp_port is 0
        self._open_files = OpenFilesWatch(raise_open_files_limit())

    async def start(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.logs.open)
        self._open_files.check(self.logs.partition_count())
        groups = GroupDriver(self.config.data_dir, group_settings(self.config), now_ms,
                             self.state.flusher, self.config.internal_log_config())
        replayed = await asyncio.to_thread(groups.open)
        log.info("group coordinator loaded %d record(s)", replayed)
        self.state.groups = groups
        if groups.store.log is not None:  # its offsets log is compacted by the cleaner
            self.state.maintenance.register(groups.store.log)
            self.logs.register_internal(groups.store.log)  # Metadata shows __consumer_offsets
        await groups.start()
        loop = asyncio.get_running_loop()
        kafka = await loop.create_server(
            lambda: KafkaConnection(self.state, self._connections),
            self.config.host,
            self.config.kafka_port,
            reuse_address=True,
            backlog=1024,
        )
        self._servers.append(kafka)
        if self.config.http_port:
            self.http = HttpGateway(self.state)
            await self.http.start()
        if self.config.mqtt_port:
            self.mqtt = MqttGateway(self.state)
            await self.mqtt.start()
        if self.config.amqp_port:
            self.amqp = AmqpGateway(self.state)
            await self.amqp.start()
        self._background = [
            asyncio.create_task(self._flush_due_partitions()),
            asyncio.create_task(self._checkpoint_periodically()),
            asyncio.create_task(self.state.maintenance.run()),
            asyncio.create_task(self.state.request_budget.run()),
        ]
        log.info(
            "Bayou listening: kafka=%s:%d (advertised %s:%d) http=%s mqtt=%s amqp=%s · "
            "data in %s · cluster %s",
            self.config.host,
            self.config.kafka_port,
            self.state.advertised_host,
            self.state.advertised_port,
            f"{self.config.host}:{self.http.port}" if self.http else "off",
            f"{self.config.host}:{self.mqtt.port}" if self.mqtt else "off",
            f"{self.config.host}:{self.amqp.port}" if self.amqp else "off",
            self.config.data_dir,
            self.state.cluster_id,
        )

    async def stop(self) -> None:
        log.info("shutting down")
        for server in self._servers:
            server.close()
        for task in self._background:
            task.cancel()
        self.state.stopping = True
        self.state.waiters.wake_all()
        if self.http is not None:
            await self.http.stop()  # after wake_all: streams and long polls end
        if self.mqtt is not None:
            await self.mqtt.stop()  # saves persistent sessions: before the logs close
        if self.amqp is not None:
            await self.amqp.stop()  # consumers commit acked offsets: before groups stop
        if self.state.groups is not None:
            self.state.groups.shutdown()
        if self._connections:
            await asyncio.gather(
                *(c.finish(SHUTDOWN_GRACE_S) for c in list(self._connections)),
                return_exceptions=True,
            )
        await self.state.flusher.drain()
        await asyncio.to_thread(self.logs.close)
        if self.state.groups is not None:
            if self.state.groups.store.log is not None:
                self.state.maintenance.unregister(self.state.groups.store.log)
                self.logs.unregister_internal(self.state.groups.store.log.topic)
            await asyncio.to_thread(self.state.groups.close)
        log.info("stopped")

    async def _flush_due_partitions(self) -> None:
        """Honour ``flush.ms``: fsync partitions whose unflushed data is old enough."""
        dirty = self.state.dirty
        while True:
            await asyncio.sleep(FLUSH_CHECK_INTERVAL_S)
            now = now_ms()
            for partition in list(dirty):
                if partition.log_end_offset <= partition.recovery_point:
                    dirty.discard(partition)  # already flushed (by a produce): nothing to do
                elif partition.needs_flush(now):
                    dirty.discard(partition)
                    try:
                        await self.state.flusher.flush(partition)
                    except Exception:
                        log.exception(
                            "periodic flush of %s-%d failed", partition.topic, partition.index
                        )

    async def _checkpoint_periodically(self) -> None:
        """Checkpoints, idle partitions' index files closed, the open-files limit watched."""
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL_S)
            try:
                await asyncio.to_thread(self.logs.checkpoint)
            except Exception:
                log.exception("checkpoint failed")
            self._open_files.check(self.logs.partition_count())


def group_settings(config: BrokerConfig) -> GroupSettings:
    return GroupSettings(
        initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
        min_session_timeout_ms=config.group_min_session_timeout_ms,
        max_session_timeout_ms=config.group_max_session_timeout_ms,
        offsets_retention_ms=config.offsets_retention_minutes * 60_000,
        offsets_retention_check_interval_ms=config.offsets_retention_check_interval_ms,
        consumer_session_timeout_ms=config.group_consumer_session_timeout_ms,
        consumer_heartbeat_interval_ms=config.group_consumer_heartbeat_interval_ms,
    )


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve(config: BrokerConfig) -> None:
    """Run the broker until SIGINT or SIGTERM."""
    broker = Broker(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await broker.start()
    try:
        await stop.wait()
    finally:
        await broker.stop()


def run(config: BrokerConfig) -> None:
    """Blocking entry point used by ``bayou serve``."""
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _install_uvloop()
    try:
        asyncio.run(serve(config))
    except (OSError, DataDirectoryInUse) as exc:
        # a port in use, an unwritable or already used data dir: one sentence, not a trace
        log.error("cannot start: %s", exc)
        raise SystemExit(1) from None
