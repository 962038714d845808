"""Builds the process's StateStore from settings: Redis of the URL's kind, else SQLite in the state directory (the
workers of one machine), else in-process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from gateway.settings import Settings
from gateway.state.base import StateStore
from gateway.state.memory import MemoryStateStore
from gateway.state.sqlite import DB_NAME, SqliteStateStore

if TYPE_CHECKING:  # redis-py is imported only when a Redis URL is set: it costs a tenth of a second of startup
    from redis.asyncio import ConnectionPool, Redis
    from redis.asyncio.cluster import RedisCluster

    from gateway.state.redis_pipe import PipelinedScripts
    from gateway.state.redis_script import ScriptConnections

# Short timeouts so that no request waits on an unreachable Redis; one retry so that a connection left stale by a
# Redis restart is replaced transparently instead of surfacing as an outage.
SOCKET_TIMEOUT_S = 0.5
CONNECT_TIMEOUT_S = 0.5
RETRIES = 1
POOL_SIZE = 256  # standalone: callers beyond it wait (up to POOL_WAIT_S) for a connection instead of failing
POOL_WAIT_S = 1.0
# Sentinel: every command shares the primary's pool, opened at startup one connection at a time; callers beyond it
# wait (up to POOL_WAIT_S), and a connection lost later is reopened one at a time (redis_sentinel.py). A primary runs
# one command at a time: 16 in flight per process keep it busy at up to 16x its service time in round trip.
SENTINEL_POOL_SIZE = 16
# Cluster: the scripts of every request run in LANES_PER_NODE lanes per node (redis_lanes.py), opened at startup one
# at a time; callers beyond them wait (up to POOL_WAIT_S). The client's own node pools, used by the rest (pipelines,
# ping), fail rather than wait when full: keep them roomy.
NODE_POOL_SIZE = 1024

RedisKind = Literal["standalone", "sentinel", "cluster"]


@dataclass(frozen=True)
class RedisTarget:
    """What a Redis URL asks for; `display` is safe to log (no credentials)."""

    kind: RedisKind
    display: str
    url: str = ""  # standalone: what `from_url` receives (it keeps every query option)
    nodes: tuple[tuple[str, int], ...] = ()  # Sentinel: the sentinels; Cluster: startup nodes
    service_name: str = ""  # Sentinel
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False


def parse_redis_url(url: str) -> RedisTarget:
    """Standalone `redis://`, `rediss://`, `unix://`; `redis+sentinel://[:pw@]h:p[,h:p]/service[/db]`;
    Cluster `redis+cluster://[:pw@]h:p[,h:p]` (or `rediss+cluster://`), or any `redis[s]://` URL with `?cluster=true`.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = dict(parse_qsl(parts.query))
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        return _sentinel(parts.netloc, parts.path, ssl=scheme.startswith("rediss"))
    cluster_flag = query.pop("cluster", "").lower() in ("1", "true", "yes")
    if scheme in ("redis+cluster", "rediss+cluster") or (cluster_flag and scheme in ("redis", "rediss")):
        if query:
            raise ValueError(f"redis cluster URL: unsupported options {sorted(query)}")
        return _cluster(parts.netloc, ssl=scheme.startswith("rediss"))
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"redis URL: unsupported scheme {scheme!r} (redis[s], unix, redis+sentinel, redis+cluster)")
    if cluster_flag:
        raise ValueError("redis URL: a unix socket cannot reach a cluster")
    plain = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
    _, _, hosts = parts.netloc.rpartition("@")
    location = f"unix://{parts.path}" if scheme == "unix" else f"{scheme}://{hosts}{parts.path}"
    password = unquote(parts.password) if parts.password else None
    return RedisTarget("standalone", location, url=plain, password=password)


def connect(target: RedisTarget) -> tuple[Redis | RedisCluster, list[Redis]]:
    """The client for a target, and companion clients to close with it (Sentinel's own connections)."""
    from redis.asyncio import BlockingConnectionPool, Redis
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.asyncio.retry import Retry
    from redis.asyncio.sentinel import Sentinel
    from redis.backoff import NoBackoff

    from gateway.state.redis_sentinel import PacedSentinelConnection, PacedSentinelPool, PacedSentinelSSLConnection

    retry = Retry(NoBackoff(), RETRIES)
    if target.kind == "standalone":
        pool = BlockingConnectionPool.from_url(
            target.url,
            max_connections=POOL_SIZE,
            timeout=POOL_WAIT_S,
            retry=retry,
            decode_responses=True,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
        )
        return Redis.from_pool(pool), []  # the client owns the pool and closes it
    if target.kind == "sentinel":
        timeouts = {"socket_timeout": SOCKET_TIMEOUT_S, "socket_connect_timeout": CONNECT_TIMEOUT_S}
        sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves this constructor unannotated
            list(target.nodes), sentinel_kwargs=timeouts, retry=retry, **timeouts
        )
        master = sentinel.master_for(
            target.service_name,
            db=target.db,
            username=target.username,
            password=target.password,
            decode_responses=True,
            connection_pool_class=PacedSentinelPool,
            max_connections=SENTINEL_POOL_SIZE,
            timeout=POOL_WAIT_S,
            connection_class=PacedSentinelSSLConnection if target.ssl else PacedSentinelConnection,
        )
        return master, list(sentinel.sentinels)
    cluster = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        username=target.username,
        password=target.password,
        ssl=target.ssl,
        decode_responses=True,
        max_connections=NODE_POOL_SIZE,
        retry=retry,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
    )
    return cluster, []


def create_state_store(settings: Settings, *, on_error: Callable[[str], None]) -> StateStore:
    """Redis when `redis_url` is set, else SQLite when `state_dir` is, else in-process. `on_error(op)` runs on every
    store error;
    op is one of admit, settle, circuit, usage, ping, other (the `polyroute_state_store_errors_total` labels).
    """
    if settings.redis_url is None and settings.state_dir is not None:
        return SqliteStateStore(
            settings.state_dir / DB_NAME,
            failure_mode=settings.state_failure_mode,
            on_error=on_error,
            facts_per_day=settings.routing_facts_per_day,
        )
    if settings.redis_url is None:
        return MemoryStateStore(facts_per_day=settings.routing_facts_per_day)
    from redis.asyncio import Redis

    from gateway.state.redis import RedisStateStore
    from gateway.state.redis_lanes import LANES_PER_NODE, ClusterLanes

    target = parse_redis_url(settings.redis_url)
    client, companions = connect(target)
    lean = client.connection_pool if isinstance(client, Redis) and target.kind == "standalone" else None
    return RedisStateStore(
        client,
        failure_mode=settings.state_failure_mode,
        on_error=on_error,
        location=target.display,
        secrets=[target.password] if target.password else [],
        companions=companions,
        scripts=_lean_scripts(lean),
        lanes=ClusterLanes(size=LANES_PER_NODE, wait_s=POOL_WAIT_S),
        facts_per_day=settings.routing_facts_per_day,
    )


def _lean_scripts(pool: ConnectionPool | None) -> ScriptConnections | PipelinedScripts | None:
    """The per-request scripts' own path, for standalone Redis: pipelined on one connection where the URL allows."""
    if pool is None:
        return None
    from gateway.state.redis_pipe import for_pool
    from gateway.state.redis_script import ScriptConnections

    return for_pool(pool, retries=RETRIES) or ScriptConnections(
        pool, size=POOL_SIZE, wait_s=POOL_WAIT_S, retries=RETRIES
    )


def _sentinel(netloc: str, path: str, *, ssl: bool) -> RedisTarget:
    username, password, nodes = _netloc(netloc, default_port=26379)
    segments = [unquote(s) for s in path.split("/") if s]
    if not segments or len(segments) > 2:
        raise ValueError("redis+sentinel URL: expected /service_name[/db] after the sentinels")
    db = int(segments[1]) if len(segments) == 2 else 0
    display = f"redis+sentinel://{_hosts(nodes)}/{segments[0]}/{db}"
    return RedisTarget(
        "sentinel", display, nodes=nodes, service_name=segments[0], db=db, username=username, password=password, ssl=ssl
    )


def _cluster(netloc: str, *, ssl: bool) -> RedisTarget:
    username, password, nodes = _netloc(netloc, default_port=6379)
    display = f"redis+cluster://{_hosts(nodes)}"
    return RedisTarget("cluster", display, nodes=nodes, username=username, password=password, ssl=ssl)


def _netloc(netloc: str, *, default_port: int) -> tuple[str | None, str | None, tuple[tuple[str, int], ...]]:
    """`[user:password@]host[:port][,host[:port]...]`; hosts may be bracketed IPv6 addresses."""
    userinfo, _, hosts = netloc.rpartition("@")
    username: str | None = None
    password: str | None = None
    if userinfo:
        user, sep, secret = userinfo.partition(":")
        username, password = (unquote(user) or None, unquote(secret) or None) if sep else (None, unquote(user))
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, port = item, default_port
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else default_port
        elif ":" in item:
            host, _, number = item.rpartition(":")
            port = int(number)
        if not host:
            raise ValueError("redis URL: a host is missing")
        nodes.append((host, port))
    return username, password, tuple(nodes)


def _hosts(nodes: tuple[tuple[str, int], ...]) -> str:
    return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in nodes)
