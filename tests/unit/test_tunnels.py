"""TunnelTable: traffic totals per connection survive rekeys, and cover every peer of a %any one."""

from __future__ import annotations

import dataclasses

from test_keylog import child_up, table

from gateway.ike.events import ChildSaDown


def count(sa, packets: int, octets: int) -> None:  # type: ignore[no-untyped-def]
    sa.counters.packets += packets
    sa.counters.bytes += octets


def test_totals_survive_a_rekey() -> None:
    t = table(None)
    first = child_up("aes128gcm16")
    tunnel, _ = t.up(first)
    old = tunnel.pairs[first.spi_in]
    count(old.inbound, 3, 300)
    count(old.outbound, 2, 200)
    second = dataclasses.replace(child_up("aes128gcm16", spi_in=0xC0000011, spi_out=0xC0000012),
                                 rekey_of=first.spi_in)
    t.up(second)
    count(tunnel.pairs[second.spi_in].inbound, 1, 100)
    t.down(ChildSaDown(first.connection, first.ike_sa, first.spi_in, first.spi_out, "rekeyed"))
    totals = t.totals("dialin")
    assert (totals.packets_in, totals.bytes_in, totals.packets_out, totals.bytes_out) == (4, 400, 2, 200)


def test_totals_of_a_connection_sum_its_peers() -> None:
    t = table(None)
    a = dataclasses.replace(child_up("aes128gcm16"), tunnel="dialin@203.0.113.2:4500")
    b = dataclasses.replace(child_up("aes128gcm16", spi_in=0xC0000021, spi_out=0xC0000022),
                            tunnel="dialin@203.0.113.2:61000")
    for ev in (a, b):
        tunnel, _ = t.up(ev)
        count(tunnel.pairs[ev.spi_in].inbound, 5, 500)
    other = dataclasses.replace(child_up("aes128gcm16", spi_in=0xC0000031, spi_out=0xC0000032),
                                connection="dialins", tunnel="dialins")
    tunnel, _ = t.up(other)
    count(tunnel.pairs[other.spi_in].inbound, 7, 700)
    names = [x.name for x in t.of_connection("dialin")]
    assert names == ["dialin@203.0.113.2:4500", "dialin@203.0.113.2:61000"]
    assert t.totals("dialin").packets_in == 10  # not the connection whose name merely starts alike
    assert t.totals("dialins").packets_in == 7
