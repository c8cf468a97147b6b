"""The ping-output parser and the percentile of ``bench/latency`` (appliance/lab/ping.py)."""

from __future__ import annotations

import pytest

from appliance.lab.ping import PingResult, parse_ping, percentile, rtt_stats
from appliance.lab.topology import LabError

OUTPUT = """\
PING 10.2.0.10 (10.2.0.10) 56(84) bytes of data.
64 bytes from 10.2.0.10: icmp_seq=1 ttl=61 time=0.412 ms
64 bytes from 10.2.0.10: icmp_seq=2 ttl=61 time=0.250 ms
64 bytes from 10.2.0.10: icmp_seq=2 ttl=61 time=0.260 ms (DUP!)
64 bytes from 10.2.0.10: icmp_seq=4 ttl=61 time=12.5 ms
64 bytes from 10.2.0.10: icmp_seq=5 ttl=61 time=1.03 ms

--- 10.2.0.10 ping statistics ---
5 packets transmitted, 4 received, +1 duplicates, 20% packet loss, time 41ms
rtt min/avg/max/mdev = 0.250/3.548/12.500/5.190 ms, pipe 2
"""


def test_parse_every_reply_without_duplicates() -> None:
    result = parse_ping(OUTPUT)
    assert result == PingResult(sent=5, received=4, rtts=(0.412, 0.25, 12.5, 1.03))
    assert result.loss == pytest.approx(0.2)


def test_parse_all_lost_and_errors() -> None:
    lost = parse_ping("PING 10.2.0.10 (10.2.0.10) 56(84) bytes of data.\n\n"
                      "--- 10.2.0.10 ping statistics ---\n"
                      "3 packets transmitted, 0 received, 100% packet loss, time 2035ms\n")
    assert lost == PingResult(3, 0, ())
    assert lost.loss == 1.0
    with pytest.raises(LabError):
        parse_ping("ping: connect: Network is unreachable\n")


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 1..100, unsorted
    assert percentile(values, 99) == 99.0
    assert percentile(values, 50) == 50.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0, 1.0, 2.0], 99) == 3.0
    assert percentile([7.0], 1) == 7.0
    assert percentile([], 99) is None
    with pytest.raises(ValueError):
        percentile([1.0], 0)


def test_rtt_stats() -> None:
    stats = rtt_stats(parse_ping(OUTPUT))
    assert stats == {"min": 0.25, "median": 0.721, "p99": 12.5, "max": 12.5, "loss": 0.2,
                     "sent": 5, "received": 4}
    assert rtt_stats(PingResult(2, 0, ()))["median"] is None
