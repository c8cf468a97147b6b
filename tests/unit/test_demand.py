"""The demand-dial state machine (gateway.demand): dial on traffic, hang up when idle,
back off after failures, persistent interfaces never rest."""

from __future__ import annotations

from gateway.demand import DemandDialer, DemandSettings

SETTINGS = DemandSettings(idle_timeout=60.0, dial_timeout=30.0, redial_min=5.0, redial_max=20.0)


def test_nothing_happens_without_traffic() -> None:
    d = DemandDialer("branch", SETTINGS)
    assert d.poll(0.0) is None and d.poll(1000.0) is None
    assert d.next_deadline() is None and d.state == "idle"


def test_traffic_dials_and_idleness_hangs_up() -> None:
    d = DemandDialer("branch", SETTINGS)
    d.trigger(10.0)
    assert d.poll(10.0) == "dial" and d.state == "dialing"
    assert d.poll(11.0) is None  # one dial at a time
    d.connected(11.5)
    d.traffic(4, 20.0)
    assert d.poll(79.9) is None  # 59.9 s after the last packet
    d.traffic(4, 79.9)  # no new packet: not activity
    assert d.next_deadline() == 80.0
    assert d.poll(80.0) == "hangup" and d.state == "idle"
    assert d.poll(81.0) is None  # stays on hook until traffic
    d.disconnected(81.0, "deleted")  # our own hang-up coming back as the SAs go
    assert (d.stats.dials, d.stats.connects, d.stats.idle_disconnects, d.stats.drops) == (1, 1, 1, 0)
    d.trigger(200.0)
    assert d.poll(200.0) == "dial"


def test_failures_back_off_doubling_up_to_the_limit_and_reset_after_success() -> None:
    d = DemandDialer("branch", SETTINGS)
    now = 0.0
    waits = []
    for _ in range(4):
        d.trigger(now)
        assert d.poll(now) == "dial"
        d.failed(now + 1, "AUTHENTICATION_FAILED")
        assert d.state == "backoff"
        d.trigger(now + 2)  # traffic meanwhile waits for the backoff
        assert d.poll(now + 2) is None
        waits.append(d.retry_at - (now + 1))
        now = d.retry_at
    assert waits == [5.0, 10.0, 20.0, 20.0]
    assert d.poll(now) == "dial"
    d.connected(now + 1)
    assert d.backoff == 0.0
    d.disconnected(now + 2, "DPD")
    assert d.state == "idle" and d.stats.drops == 1
    d.trigger(now + 3)
    assert d.poll(now + 3) == "dial"
    d.failed(now + 4, "timeout")
    assert d.retry_at == now + 4 + 5.0  # back to redial_min


def test_a_dial_that_takes_too_long_failed() -> None:
    d = DemandDialer("branch", SETTINGS)
    d.trigger(0.0)
    d.poll(0.0)
    assert d.next_deadline() == 30.0
    assert d.poll(30.0) == "failed" and d.state == "backoff" and "30 s" in d.last_failure
    assert d.poll(35.0) is None  # nothing waits any more: no redial


def test_a_failure_while_dialing_reported_as_down_is_a_failure() -> None:
    d = DemandDialer("branch", SETTINGS)
    d.trigger(0.0)
    d.poll(0.0)
    d.disconnected(3.0, "NO_PROPOSAL_CHOSEN")
    assert d.state == "backoff" and d.stats.failures == 1


def test_persistent_dials_at_once_again_after_drops_and_never_idles_out() -> None:
    d = DemandDialer("branch", DemandSettings(idle_timeout=60.0, persistent=True, redial_min=5.0))
    assert d.poll(0.0) == "dial"
    d.connected(1.0)
    assert d.poll(10_000.0) is None and d.next_deadline() is None
    d.disconnected(10_001.0, "peer deleted")
    assert d.poll(10_001.0) == "dial"
    d.failed(10_002.0, "timeout")
    assert d.poll(10_006.9) is None
    assert d.poll(10_007.0) == "dial"  # no traffic needed
