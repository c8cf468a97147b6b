"""The daemon's reload, with a stand-in backend and a real IKEv2 peer in memory: an
established tunnel keeps its SPIs across reloads; a broken file changes nothing."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from ike_loopback import BRANCH, HQ, psk_pair, seeded

from gateway.control.protocol import ControlError, request
from gateway.daemon import Gateway, ReloadError
from gateway.dataplane.engine import IkeDatagram
from gateway.dataplane.sa import Mode
from gateway.ike.events import Datagram
from gateway.ike.v2.endpoint import IkeV2Endpoint

PSK = "s3cret-psk-value"  # what ike_loopback.psk_pair uses

CONFIG = f"""\
gateway: {{name: hq, public_interface: wan0, public_address: {HQ}}}
edge: {{nftables: false}}
control: {{socket: {{socket}}}}
connections:
  branch1:
    remote: {BRANCH}
    local_subnets: [10.1.0.0/24]
    remote_subnets: [10.2.0.0/24]
    auth: {{method: psk, psk: {PSK}}}
  manual1:
    remote: 198.51.100.9
    local_subnets: [10.1.0.0/24]
    remote_subnets: [10.5.0.0/24]
    keying: manual
    manual:
      outbound: {{spi: 0x1001, algorithm: aes128gcm16, encryption_key: 0x{"11" * 20}}}
      inbound: {{spi: 0x2001, algorithm: aes128gcm16, encryption_key: 0x{"22" * 20}}}
"""

BRANCH2 = """\
  branch2:
    remote: 203.0.113.7
    local_subnets: [10.1.0.0/24]
    remote_subnets: [10.3.0.0/24]
    ike: {start: start}
    auth: {method: psk, psk: another-key}
"""


class Backend:
    """Stands in for the userspace backend: records routes, hands IKE to the peer."""

    name = "stand-in"
    tun_name = "tun-test"

    def __init__(self) -> None:
        self.sockets = object()
        self.ike_handler: Any = None
        self.sent: list[Datagram] = []
        self.log: list[Datagram] = []  # everything sent
        self.routes: list[tuple[Mode, list[ipaddress.IPv4Network]]] = []
        self.unroutes: list[tuple[Mode, list[ipaddress.IPv4Network]]] = []

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        pass

    def stop(self) -> None:
        pass

    async def route(self, mode: Mode, local: list[ipaddress.IPv4Network],
                    remote: list[ipaddress.IPv4Network]) -> None:
        self.routes.append((mode, list(remote)))

    async def unroute(self, mode: Mode, remote: list[ipaddress.IPv4Network]) -> None:
        self.unroutes.append((mode, list(remote)))

    def send_ike(self, data: bytes, local_port: int, remote: tuple[str, int]) -> None:
        self.sent.append(Datagram(data, local_port, remote))
        self.log.append(self.sent[-1])


class Lab:
    def __init__(self, tmp_path: Path, config: str = CONFIG) -> None:
        self.path = tmp_path / "hq.yaml"
        self.socket = str(tmp_path / "control.sock")
        self.config = config
        self.write()
        from gateway.config import load_config

        self.gw = Gateway(load_config(self.path))
        self.backend = Backend()
        self.gw._make_backend = lambda: self.backend  # type: ignore[method-assign]
        self.peer = IkeV2Endpoint(BRANCH, [psk_pair()[1]], random=seeded(7))

    def write(self, extra: str = "", text: str | None = None) -> None:
        if text is None:
            text = self.config.replace("{socket}", self.socket) + extra
        self.path.write_text(text)

    def pump(self) -> None:
        """IKE between the daemon and the branch until both are quiet."""
        for _ in range(50):
            now = time.monotonic()
            out, self.backend.sent = self.backend.sent, []
            for d in out:
                if d.remote[0] == BRANCH:
                    self.peer.receive(d.data, d.remote[1], (HQ, d.local_port), now)
            back = self.peer.datagrams_to_send()
            for d in back:
                self.gw._ike_datagram(IkeDatagram(d.data, (BRANCH, d.local_port), d.remote[1]))
            while self.peer.next_event() is not None:
                pass
            if not out and not back:
                return

    def spis(self) -> tuple[list[Any], list[Any]]:
        sas = self.gw.sas()
        return (sorted((s["spi"], s["direction"]) for s in sas["sas"]),
                [(s["ike_sa"], [c["spi_in"] for c in s["children"]]) for s in sas["ike_sas"]
                 if s["name"] == "branch1"])


def run(scenario: Any) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 20))


async def up(lab: Lab) -> None:
    await lab.gw.start()
    lab.peer.initiate("to-hq", time.monotonic())
    lab.pump()
    assert lab.gw.ike is not None and lab.gw.ike.established("branch1")


def test_adding_a_connection_keeps_the_tunnel_and_a_broken_file_changes_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lab = Lab(tmp_path)
    caplog.set_level(logging.INFO, logger="gateway")

    async def scenario() -> None:
        await up(lab)
        before = lab.spis()
        assert len(before[0]) == 4 and before[1]  # manual pair + negotiated pair; one IKE SA
        lab.write(BRANCH2)
        result = await lab.gw.reload()
        assert result["added"] == ["branch2"] and result["unchanged"] == ["branch1", "manual1"]
        assert result["removed"] == [] and result["changed"] == {} and result["needs_restart"] == []
        lab.pump()
        assert lab.spis() == before
        assert sorted(c["name"] for c in lab.gw.status()["connections"]) == ["branch1", "branch2", "manual1"]
        # branch2 is kept up: its IKE_SA_INIT went out
        assert any(d.remote[0] == "203.0.113.7" for d in lab.backend.log)
        assert "config.reloaded" in caplog.text and "config.connection_added" in caplog.text

        lab.write(text="connections: [this is not a mapping\n")
        caplog.clear()
        with pytest.raises(ReloadError):
            await lab.gw.reload()
        [failed] = [r for r in caplog.records if r.getMessage() == "config.reload_failed"]
        assert failed.levelno == logging.ERROR and "the running config stays" in failed.event_fields["detail"]
        assert sorted(lab.gw.ike.configs) == ["branch1", "branch2"] and lab.spis() == before

        lab.write()  # branch2 goes again
        result = await lab.gw.reload()
        assert result["removed"] == ["branch2"] and sorted(lab.gw.ike.configs) == ["branch1"]
        assert lab.spis() == before
        await lab.gw.shutdown()

    run(scenario)


def test_changed_and_removed_connections(tmp_path: Path) -> None:
    lab = Lab(tmp_path)

    async def scenario() -> None:
        await up(lab)
        (_, [(old_ike, _)]) = lab.spis()
        # branch1 changes (its CHILD_SA lifetime), manual1 gets a new inbound SPI
        lab.write(text=CONFIG.replace("{socket}", lab.socket)
                  .replace(f"psk: {PSK}}}", f"psk: {PSK}}}\n    lifetimes: {{child: 30m}}")
                  .replace("spi: 0x2001", "spi: 0x2002"))
        result = await lab.gw.reload()
        assert result["changed"] == {"branch1": ["lifetimes"], "manual1": ["manual"]}
        lab.pump()  # the DELETE reaches the branch, which keeps its side up: it comes back
        lab.peer.handle_timer(time.monotonic() + 10)  # (after its retry delay)
        lab.pump()
        sas, [(new_ike, children)] = lab.spis()
        assert new_ike != old_ike and children
        assert ("0x00002002", "in") in sas and ("0x00002001", "in") not in sas
        assert lab.gw.config.connections["branch1"].lifetimes.child == 1800
        # manual1 goes: its route with it; branch1's stays
        lab.write(text=CONFIG.replace("{socket}", lab.socket).split("  manual1:")[0])
        result = await lab.gw.reload()
        assert result["removed"] == ["manual1"]
        assert lab.backend.unroutes == [(Mode.TUNNEL, [ipaddress.IPv4Network("10.5.0.0/24")])]
        assert "manual1" not in lab.gw.tunnels and all(s["spi"] != "0x00002002" for s in lab.gw.sas()["sas"])
        await lab.gw.shutdown()

    run(scenario)


def test_restart_only_settings_are_reported_and_kept(tmp_path: Path) -> None:
    lab = Lab(tmp_path)

    async def scenario() -> None:
        await up(lab)
        before = lab.spis()
        lab.write(text=CONFIG.replace("{socket}", lab.socket).replace("name: hq", "name: renamed")
                  .replace("edge: {nftables: false}", "edge: {nftables: false}\ndataplane: {tun_mtu: 1300}"))
        result = await lab.gw.reload()
        assert result["needs_restart"] == ["gateway.name", "dataplane.tun_mtu"]
        assert lab.gw.config.gateway.name == "hq" and lab.gw.config.dataplane.tun_mtu == 1400
        assert lab.spis() == before
        await lab.gw.shutdown()

    run(scenario)


def test_sighup_and_the_control_socket_reload(tmp_path: Path) -> None:
    lab = Lab(tmp_path)

    async def scenario() -> None:
        task = asyncio.get_running_loop().create_task(lab.gw.run())
        while not lab.gw._reloadable:
            await asyncio.sleep(0.01)
        lab.write(BRANCH2)
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(200):
            if lab.gw.ike is not None and "branch2" in lab.gw.ike.configs:
                break
            await asyncio.sleep(0.01)
        assert "branch2" in lab.gw.ike.configs
        lab.write()
        result = await asyncio.to_thread(request, lab.socket, "reload")
        assert result["removed"] == ["branch2"]
        lab.write(text="gateway: {}\n")
        with pytest.raises(ControlError, match=r"config not reloaded: .*gateway\.public_interface"):
            await asyncio.to_thread(request, lab.socket, "reload")
        # an operator's mistake gets its own message, not "internal error"
        with pytest.raises(ControlError, match=r"no IKE connection named 'nosuch' \(known: branch1\)"):
            await asyncio.to_thread(request, lab.socket, "up", name="nosuch")
        lab.gw._stop.set()
        await task

    run(scenario)


ANY_PEER = f"""\
gateway: {{name: hq, public_interface: wan0, public_address: {HQ}}}
edge: {{nftables: false}}
control: {{socket: {{socket}}}}
connections:
  branch1:
    remote: "%any"
    local_subnets: [10.1.0.0/24]
    remote_subnets: [10.2.0.0/16]
    auth: {{method: psk, psk: {PSK}, remote_id: "%any"}}
"""


def test_a_peer_inside_the_trapped_remote_subnets_gets_no_route_of_its_own(tmp_path: Path) -> None:
    """The trap routes 10.2.0.0/16 at start; the peer's 10.2.0.0/24 is inside: no route per
    peer, none taken away with it, and the trap's own route goes with the connection."""
    lab = Lab(tmp_path, ANY_PEER)
    trap_route = (Mode.TUNNEL, [ipaddress.IPv4Network("10.2.0.0/16")])

    async def scenario() -> None:
        await up(lab)
        [peer] = [t for t in lab.gw.ike_tunnels.tunnels.values() if t.name.startswith("branch1@")]
        assert peer.pairs and peer.remote_nets == [ipaddress.IPv4Network("10.2.0.0/24")]
        await asyncio.sleep(0)  # (a route would be a task)
        assert lab.backend.routes == [trap_route]
        await lab.gw._restore_routes()  # the TUN lost its routes: the trap's come back, no more
        assert lab.backend.routes == [trap_route, trap_route]
        lab.write(text=CONFIG.replace("{socket}", lab.socket).split("  branch1:")[0] + "  {}\n")
        result = await lab.gw.reload()
        assert result["removed"] == ["branch1"]
        assert lab.backend.unroutes == [trap_route]
        await lab.gw.shutdown()

    run(scenario)


def test_gateway_run_tunes_the_garbage_collector_once_started(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`gateway run` (tune_gc) freezes what start made and collects less often; a Gateway
    made in a test leaves the test process's collector alone."""
    import gc

    from gateway import daemon

    calls: list[object] = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(gc, "set_threshold", lambda *t: calls.append(t))

    async def start_and_stop(gw: Gateway) -> None:
        task = asyncio.get_running_loop().create_task(gw.run())
        while not gw._reloadable:
            await asyncio.sleep(0.01)
        gw._stop.set()
        await task

    for tune in (False, True):
        lab = Lab(tmp_path)
        lab.gw.tune_gc = tune
        asyncio.run(asyncio.wait_for(start_and_stop(lab.gw), 20))
        assert calls == (["freeze", daemon.GC_THRESHOLDS] if tune else [])
