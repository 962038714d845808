"""Real Redis topologies on loopback for tests: a three-master Cluster, and a Sentinel-managed primary and replica."""

from __future__ import annotations

import concurrent.futures
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis
from redis.cluster import RedisCluster

from tests.support.processes import HOST, START_TIMEOUT_S, ManagedProcess, RedisServer, free_port, start_redis

SETTLE_TIMEOUT_S = 30.0  # the bound of every wait for a topology to agree (a cluster's state, a failover)
_POLL_S = 0.05
SERVICE = "polyroute"  # the Sentinel service name


def have_redis_cli() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


def wait_until(check: object, what: str, timeout: float = SETTLE_TIMEOUT_S) -> None:
    """Poll `check()` until it is truthy; bounded. Exceptions count as not yet."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(_POLL_S)


def _client(port: int) -> redis.Redis:
    return redis.Redis(HOST, port, socket_timeout=2, socket_connect_timeout=2, decode_responses=True)


def _ping(port: int) -> bool:
    with _client(port) as c:
        return bool(c.ping())


def _replication(port: int) -> dict[str, object]:
    with _client(port) as c:
        info: dict[str, object] = c.info("replication")
        return info


class RedisClusterNodes:
    """Three masters, no replicas, slots split evenly by `redis-cli --cluster create`."""

    def __init__(self, masters: Sequence[RedisServer]) -> None:
        self.masters = list(masters)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{HOST}:{m.port}" for m in self.masters)

    def client(self) -> RedisCluster:
        nodes = [redis.cluster.ClusterNode(HOST, m.port) for m in self.masters if m.ping()]
        return RedisCluster(startup_nodes=nodes, decode_responses=True, socket_timeout=2)

    def node_for(self, key: str) -> RedisServer:
        """The master that serves `key`'s slot now."""
        slot = self.slot(key)
        for m in self.masters:
            with _client(m.port) as c:
                for start, end, *owners in c.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        port = int(owners[0][1])
                        return next(n for n in self.masters if n.port == port)
        raise LookupError(f"no master serves slot {slot}")

    @staticmethod
    def slot(key: str) -> int:
        return int(redis.crc.key_slot(key.encode()))

    def node_id(self, server: RedisServer) -> str:
        with _client(server.port) as c:
            return str(c.execute_command("CLUSTER", "MYID"))

    def healthy(self) -> bool:
        """Every master up and every one of them sees the whole cluster ok."""
        for m in self.masters:
            with _client(m.port) as c:
                info = c.execute_command("CLUSTER", "INFO")
                if "cluster_state:ok" not in str(info):
                    return False
        return True

    def wait_healthy(self) -> None:
        wait_until(self.healthy, "the cluster to report cluster_state:ok on every master")

    def move_slot(self, key: str, target: RedisServer, *, finish: bool = True) -> RedisServer:
        """Migrate `key`'s slot to `target` as `redis-cli --cluster reshard` does: IMPORTING/MIGRATING, MIGRATE of
        its keys, then SETSLOT NODE everywhere. With `finish=False` it stops half-way: the slot stays MIGRATING on its
        source and IMPORTING on the target with its keys moved, so that clients get ASK redirects. Returns the source.
        """
        source = self.node_for(key)
        assert source is not target
        slot, target_id, source_id = self.slot(key), self.node_id(target), self.node_id(source)
        with _client(target.port) as t, _client(source.port) as s:
            t.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while keys := s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                s.execute_command("MIGRATE", HOST, target.port, "", 0, 5000, "KEYS", *keys)
            if finish:
                self.assign_slot(slot, target_id)
        return source

    def assign_slot(self, slot: int, owner_id: str) -> None:
        for m in self.masters:
            with _client(m.port) as c:
                c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", owner_id)

    def flush(self) -> None:
        """Empty every master."""
        for m in self.masters:
            with _client(m.port) as c:
                c.flushall()

    def stop(self) -> None:
        for m in self.masters:
            m.stop()


def start_cluster(masters: int = 3, *, tcp_backlog: int | None = None) -> RedisClusterNodes:
    """Start `masters` cluster-enabled servers on free loopback ports, join them, and wait until the cluster is ok.
    `tcp_backlog` shortens each node's accept queue: a burst of more connects than it holds loses SYNs to the kernel,
    as a busy node does, and those connects only complete on the client's retransmission a second later."""
    args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000"]
    if tcp_backlog is not None:
        args += ["--tcp-backlog", str(tcp_backlog)]

    def start_node(_: int) -> RedisServer:
        # the bus port of its own: the default, port + 10000, may be past 65535 or taken
        return start_redis(extra_args=[*args, "--cluster-port", str(free_port())])

    with concurrent.futures.ThreadPoolExecutor(masters) as pool:
        servers = list(pool.map(start_node, range(masters)))
    cluster = RedisClusterNodes(servers)
    try:
        addresses = [f"{HOST}:{s.port}" for s in servers]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=SETTLE_TIMEOUT_S,
        )
        cluster.wait_healthy()
    except BaseException:
        cluster.stop()
        raise
    return cluster


class SentinelSetup:
    """A primary, its replica and three sentinels watching them as service `polyroute`."""

    def __init__(self, primary: RedisServer, replica: RedisServer, sentinels: Sequence[SentinelProcess]) -> None:
        self.primary = primary
        self.replica = replica
        self.sentinels = list(sentinels)

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"{HOST}:{s.port}" for s in self.sentinels) + f"/{SERVICE}/0"

    def master_port(self) -> int:
        """The primary's port as the sentinels' majority tell it now."""
        ports = []
        for s in self.sentinels:
            with _client(s.port) as c:
                try:
                    _, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
                    ports.append(int(port))
                except (redis.RedisError, OSError):
                    continue
        return max(set(ports), key=ports.count) if ports else 0

    def replica_is_primary(self) -> bool:
        return _replication(self.replica.port).get("role") == "master"

    def stop(self) -> None:
        for process in (*self.sentinels, self.replica, self.primary):
            process.stop()


class SentinelProcess:
    """`redis-server --sentinel` with a config file of its own (sentinels rewrite it)."""

    def __init__(self, port: int, config: Path) -> None:
        self.port = port
        self.process = ManagedProcess([_redis_server(), str(config), "--sentinel"], label="sentinel")
        wait_until(lambda: _ping(port), f"sentinel on port {port}", START_TIMEOUT_S)

    def stop(self) -> None:
        self.process.stop()


def _redis_server() -> str:
    binary = shutil.which("redis-server")
    assert binary is not None
    return binary


def start_sentinel_setup(directory: Path, *, tcp_backlog: int | None = None) -> SentinelSetup:
    """A primary, a replica of it, and three sentinels (quorum 2, down after 1 s, failover timeout 3 s).
    `tcp_backlog` shortens the accept queue of the primary and the replica, as `start_cluster`'s does."""
    backlog = ["--tcp-backlog", str(tcp_backlog)] if tcp_backlog is not None else []
    primary = start_redis(extra_args=backlog)
    started: list[RedisServer | SentinelProcess] = [primary]
    try:
        replica = start_redis(extra_args=["--replicaof", HOST, str(primary.port), *backlog])
        started.append(replica)
        wait_until(lambda: _replication(replica.port).get("master_link_status") == "up", "the replica to sync")
        sentinels = []
        for n in range(3):
            port = free_port()
            config = directory / f"sentinel-{n}.conf"
            config.write_text(
                f"port {port}\nbind {HOST}\ndir {directory}\n"
                f"sentinel monitor {SERVICE} {HOST} {primary.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 3000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            sentinel = SentinelProcess(port, config)
            started.append(sentinel)
            sentinels.append(sentinel)
        setup = SentinelSetup(primary, replica, sentinels)

        def all_know_the_replica() -> bool:
            for s in sentinels:
                with _client(s.port) as c:
                    if not c.sentinel_slaves(SERVICE) or int(c.sentinel_master(SERVICE)["num-other-sentinels"]) < 2:
                        return False
            return True

        wait_until(all_know_the_replica, "every sentinel to know the replica and the other sentinels")
        return setup
    except BaseException:
        for process in reversed(started):
            process.stop()
        raise
