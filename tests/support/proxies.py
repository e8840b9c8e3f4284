"""TCP proxies in front of an agent, for what only a network in between can do: look at
the bytes on the wire, or change and cut a sync stream in flight; and a round-robin load
balancer in front of coordinator replicas.

Each runs its own event loop in a thread; ``port`` is where it listens (on 127.0.0.1, a
name the agents' certificates carry, so a sender dialling the proxy checks the agent's
certificate as usual).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Callable

from demo.stack import Stack, free_port
from pvesim.tls import ensure_issued_certificate
from shared.tls import server_context

HOST = "127.0.0.1"


# What one connection's client sends -> what to pass on (None: cut the connection).
Filter = Callable[[bytes], bytes | None]


class Relay:
    """Passes bytes both ways between its clients and an agent; each connection's
    ``upstream()`` filter sees (and may change, or cut) what its client sends."""

    def __init__(
        self,
        target_port: int,
        server_tls: ssl.SSLContext | None = None,
        client_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.target_port = target_port
        self.server_tls, self.client_tls = server_tls, client_tls
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        listening = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(listening,), daemon=True)
        self._thread.start()
        assert listening.wait(10), "the proxy did not start"

    def upstream(self) -> Filter:
        """The filter of a new connection."""
        return lambda data: data

    def _run(self, listening: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self._server = self.loop.run_until_complete(
            asyncio.start_server(self._connection, HOST, self.port, ssl=self.server_tls)
        )
        listening.set()
        self.loop.run_forever()

    async def _dial(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(
            HOST, self.target_port, ssl=self.client_tls, server_hostname=HOST if self.client_tls else None
        )

    async def _connection(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        try:
            agent_in, agent_out = await self._dial()
        except OSError:  # the agent is restarting: the caller sees the connection closed
            client_out.transport.abort()
            return
        await asyncio.gather(
            self._pump(client_in, agent_out, client_out, self.upstream()),
            self._pump(agent_in, client_out, agent_out, lambda data: data),
        )

    async def _pump(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        src_out: asyncio.StreamWriter,
        passing: Filter,
    ) -> None:
        cut = False
        try:
            while data := await src.read(1 << 16):
                passed = passing(data)
                if passed is None:
                    cut = True
                    return
                dst.write(passed)
                await dst.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            for writer in (dst, src_out):
                if cut:
                    writer.transport.abort()  # a broken connection, not a finished one
                else:
                    with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
                        writer.close()

    def close(self) -> None:
        """Stop listening and drop every connection still open."""

        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            connections = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in connections:
                task.cancel()
            await asyncio.gather(*connections, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class RoundRobin(Relay):
    """A layer-4 load balancer, as replicas usually sit behind: each new connection goes to
    the next of ``target_ports``, skipping one that refuses connections (a replica that is
    down), as a balancer's health check would. TLS passes through to the replica."""

    def __init__(self, target_ports: list[int]) -> None:
        self.targets = list(target_ports)
        self._next = 0
        super().__init__(self.targets[0])

    async def _dial(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        for _ in self.targets:
            port = self.targets[self._next % len(self.targets)]
            self._next += 1
            try:
                return await asyncio.open_connection(HOST, port)
            except OSError:
                continue
        raise ConnectionRefusedError(f"no replica answers on {self.targets}")


class WireTap(Relay):
    """Passes an agent's connections on untouched, keeping every byte their clients sent."""

    def __init__(self, target_port: int) -> None:
        self._sent: list[bytearray] = []
        self._lock = threading.Lock()
        super().__init__(target_port)

    def upstream(self) -> Filter:
        sent = bytearray()
        with self._lock:
            self._sent.append(sent)

        def keep(data: bytes) -> bytes:
            with self._lock:
                sent.extend(data)
            return data

        return keep

    def captured(self) -> list[bytes]:
        """What each connection's client sent, one connection after another."""
        with self._lock:
            return [bytes(sent) for sent in self._sent]


class DataStreamProxy(Relay):
    """A man in the middle in front of an agent that lets ``body`` see (and change or cut) the
    body of every data stream (PUT /v1/receives/...) passing through it.

    Only a holder of the cluster CA's key can be one: it presents a certificate that CA issued
    for 127.0.0.1 (as a test can), ends the sender's TLS and opens its own to the agent.
    """

    def __init__(self, stack: Stack, node: str) -> None:
        tls_dir = stack.base / "tls"
        cert, key = ensure_issued_certificate(
            stack.pvesim_dir, tls_dir / "proxy.pem", tls_dir / "proxy.key", "proxy", [HOST]
        )
        super().__init__(stack.agent_port(node), server_context(cert, key), stack.client_tls())

    def body(self, data: bytes, offset: int) -> bytes | None:
        """``data`` of a stream's body, starting ``offset`` bytes in: what to pass on (None: cut)."""
        return data

    def upstream(self) -> Filter:
        seen = b""  # requests on a kept-alive connection, until a data stream starts
        body_seen = -1  # bytes of that stream's body passed so far

        def passing(data: bytes) -> bytes | None:
            nonlocal seen, body_seen
            if body_seen < 0:
                seen = (seen + data)[-(1 << 20) :]
                start = seen.find(b"PUT /v1/receives/")
                end = seen.find(b"\r\n\r\n", start) if start >= 0 else -1
                if end < 0:
                    return data
                body_seen = len(seen) - end - 4
                head, body = data[: len(data) - body_seen], data[len(data) - body_seen :]
                passed = self.body(body, 0)
                return None if passed is None else head + passed
            passed = self.body(data, body_seen)
            body_seen += len(data)
            return passed

        return passing
