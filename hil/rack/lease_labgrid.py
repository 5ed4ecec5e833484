"""Bench leases through labgrid's coordinator: one place per bench, tagged; reserve, acquire, release.

Used when a rack file says `lease: {backend: labgrid, coordinator: host:port}` (or `LG_COORDINATOR`
is set): the benches of racks on several hosts are then leased from one coordinator, so two hosts
never use the same bench. Each bench is a place named `<place_prefix><bench>` carrying the rack's
tags (variant, can, capabilities). A worker reserves the place (a labgrid reservation filtered by
the place name), acquires it, renews the reservation on every heartbeat and checks the place is
still acquired by it; a place released or acquired by someone else (`labgrid-client release --kick`)
is a lost lease.

The client is labgrid's own `ClientSession` (labgrid.remote.client) talking gRPC to the
coordinator; its asyncio loop runs in a thread of its own so every call has a timeout.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Coroutine, TypeVar

from hil.errors import BenchBroken, BenchBusy
from hil.rack.lease import LeaseLost
from hil.rack.inventory import LeaseConfig

T = TypeVar("T")

#: labgrid's default coordinator port (labgrid.remote.client.start_session).
DEFAULT_PORT = 20408


def _tag_value(value: str) -> str:
    """labgrid tag values are lower-case words: BMS-HW-A2 -> bms_hw_a2."""
    return re.sub(r"[^a-z0-9_]", "_", value.lower())


class _Loop:
    """An asyncio loop in its own thread; `run` waits for a coroutine with a timeout."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="hil-labgrid-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class _Client:
    """One labgrid client session under our own name (host/user), so each worker is a distinct holder."""

    def __init__(self, address: str, user: str, timeout: float) -> None:
        from labgrid.remote.client import ClientSession  # type: ignore[import-untyped]
        from labgrid.util.proxy import proxymanager  # type: ignore[import-untyped]

        self.timeout = timeout
        self.user = user
        self.host = socket.gethostname()
        self.io = _Loop()
        name = (self.host, user)

        class Session(ClientSession):  # type: ignore[misc]
            def gethostname(self) -> str:
                return name[0]

            def getuser(self) -> str:
                return name[1]

        async def make() -> Any:
            s = Session(proxymanager.get_grpc_address(address, default_port=DEFAULT_PORT), asyncio.get_running_loop())
            await s.start()
            return s

        try:
            self.session = self.io.run(make(), timeout)
        except Exception as exc:
            self.io.stop()
            raise BenchBroken(f"labgrid coordinator {address} not reachable within {timeout:.0f} s: "
                              f"{type(exc).__name__}: {exc}") from exc

    @property
    def name(self) -> str:
        return f"{self.host}/{self.user}"

    def call(self, method: str, request: Any) -> Any:
        """A coordinator RPC; then wait until our view of places is up to date."""
        async def go() -> Any:
            reply = await getattr(self.session.stub, method)(request)
            await self.session.sync_with_coordinator()
            return reply

        return self.io.run(go(), self.timeout)

    def places(self) -> dict[str, Any]:
        return dict(self.session.places)

    def close(self) -> None:
        try:
            self.io.run(self.session.stop(), self.timeout)
            self.io.run(self.session.close(), self.timeout)
        except Exception:  # closing goes on regardless
            pass
        self.io.stop()


@dataclass
class LabgridLease:
    """A place we reserved and acquired."""

    bench: str
    place: str
    backend: "LabgridLeases"
    client: _Client
    token: str
    acquired: float
    stale_after_s: float
    _failing_since: float | None = None
    released: bool = False

    def renew(self) -> None:
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb  # type: ignore[import-untyped]

        try:
            self.client.call("PollReservation", pb.PollReservationRequest(token=self.token))  # keeps it from expiring
            place = self.client.places().get(self.place)
        except Exception as exc:
            # A coordinator briefly out of reach is tolerated for stale_after_s: the place stays ours meanwhile.
            now = time.monotonic()
            self._failing_since = self._failing_since or now
            if now - self._failing_since > self.stale_after_s:
                raise LeaseLost(f"lease on bench {self.bench}: labgrid coordinator unreachable for "
                                f"{now - self._failing_since:.0f} s: {type(exc).__name__}: {exc}") from exc
            return
        self._failing_since = None
        if place is None:
            raise LeaseLost(f"lease on bench {self.bench} lost: labgrid place {self.place} was deleted")
        if place.acquired != self.client.name:
            who = place.acquired or "nobody (released by someone else)"
            raise LeaseLost(f"lease on bench {self.bench} lost: labgrid place {self.place} is now acquired by {who}")

    def release(self) -> None:
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb  # type: ignore[import-untyped]

        if self.released:
            return
        self.released = True
        try:
            # fromuser: released only if it is still ours
            self.client.call("ReleasePlace", pb.ReleasePlaceRequest(placename=self.place, fromuser=self.client.name))
            self.client.call("CancelReservation", pb.CancelReservationRequest(token=self.token))
        except Exception:  # best effort; the reservation expires by itself
            pass
        finally:
            self.backend.close()

    def describe(self) -> dict[str, Any]:
        return {"backend": "labgrid", "place": self.place, "owner": self.client.name, "reservation": self.token,
                "acquired": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.acquired))}


@dataclass
class LabgridLeases:
    """Leases benches as labgrid places on the coordinator at `address`."""

    address: str
    place_prefix: str = "hil-"
    stale_after_s: float = 15.0
    timeout_s: float = 10.0
    allocate_s: float = 3.0
    user: str | None = None
    _client: _Client | None = None

    def client(self) -> _Client:
        """The one client session of this backend (grpc's asyncio layer wants one event loop per process)."""
        if self._client is None:
            self._client = _Client(self.address, self._user(), self.timeout_s)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @classmethod
    def from_config(cls, cfg: LeaseConfig) -> "LabgridLeases":
        address = os.environ.get("LG_COORDINATOR") or cfg.coordinator
        if not address:
            raise BenchBroken("lease.backend labgrid needs lease.coordinator (host:port) in the rack file "
                              "or LG_COORDINATOR in the environment")
        return cls(address, cfg.place_prefix, cfg.stale_after_s)

    def _user(self) -> str:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        return self.user or f"{os.environ.get('USER', 'hil')}-{worker}-{os.getpid()}"

    def try_acquire(self, bench: str, tags: dict[str, str] | None = None) -> LabgridLease:
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb  # type: ignore[import-untyped]

        place = self.place_prefix + bench
        client = self.client()
        token = None
        try:
            if place not in client.places():
                try:
                    client.call("AddPlace", pb.AddPlaceRequest(name=place))
                except Exception as exc:  # another host created it first: fine
                    if place not in client.places():
                        raise BenchBroken(f"labgrid place {place} could not be created: {exc}") from exc
            wanted = {k: _tag_value(v) for k, v in (tags or {}).items()}
            if {k: v for k, v in client.places()[place].tags.items()} != wanted:
                client.call("SetPlaceTags", pb.SetPlaceTagsRequest(placename=place, tags=wanted))
            current = client.places()[place]
            if current.acquired:
                raise BenchBusy(f"bench {bench}: labgrid place {place} is acquired by {current.acquired}")
            reply = client.call("CreateReservation", pb.CreateReservationRequest(
                filters={"main": pb.Reservation.Filter(filter={"name": place})}, prio=0.0))
            token = reply.reservation.token
            deadline = time.monotonic() + self.allocate_s
            while True:
                res = client.call("PollReservation", pb.PollReservationRequest(token=token)).reservation
                if res.allocations.get("main") == place:
                    break
                if time.monotonic() > deadline:
                    raise BenchBusy(f"bench {bench}: labgrid place {place} is reserved by someone else "
                                    f"(reservation {token} still waiting after {self.allocate_s:.0f} s)")
                time.sleep(0.2)  # the coordinator allocates on its own schedule; no event for it on this API
            try:
                client.call("AcquirePlace", pb.AcquirePlaceRequest(placename=place))
            except Exception as exc:
                raise BenchBusy(f"bench {bench}: labgrid place {place} could not be acquired: {exc}") from exc
        except BaseException:
            if token is not None:
                try:
                    client.call("CancelReservation", pb.CancelReservationRequest(token=token))
                except Exception:
                    pass
            raise
        return LabgridLease(bench, place, self, client, token, time.time(), self.stale_after_s)
