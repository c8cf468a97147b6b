"""IkeStats: the IKE cores' events as the numbers `gateway status` and the metrics show."""

from __future__ import annotations

from gateway.ike.events import AuthFailed, IkeSaDown, IkeSaUp, NegotiationFailed, PeerDead
from gateway.ikestats import Histogram, IkeStats


def up(connection: str, seconds: float, auth: str = "psk") -> IkeSaUp:
    return IkeSaUp(connection, "sa", "192.0.2.1:500", "198.51.100.1:500", True, "aes", "a", "b", False, False,
                   auth, seconds)


def test_handshakes_failures_rekeys_and_dead_peers() -> None:
    stats = IkeStats()
    stats.observe(up("branch", 0.004), 2)
    stats.observe(up("branch", 0.3), 2)
    stats.observe(up("branch", 0.0, auth="rekey"), 2)  # IKEv2 CREATE_CHILD_SA rekey: not a handshake
    stats.observe(up("dialin", 0.02), 1)
    stats.observe(IkeSaDown("dialin", "old", "203.0.113.2:4500", "phase 1 rekeyed"), 1)
    stats.observe(AuthFailed("branch", "198.51.100.1:500", "bad_psk", "AUTH payload mismatch"), 2)
    stats.observe(AuthFailed(None, "203.0.113.9:500", "no_config", "no connection for this peer"), 0)
    stats.observe(NegotiationFailed("branch", "198.51.100.1:500", "ike_sa_init", "no_proposal_chosen", ""), 2)
    stats.observe(PeerDead("branch", "sa", "198.51.100.1:500", "restart"), 2)
    assert stats.established == {("branch", 2): 2, ("dialin", 1): 1}
    assert stats.rekeys == {("branch", 2, "ike"): 1, ("dialin", 1, "ike"): 1}
    assert stats.failures == {("branch", 2, "auth_failed:bad_psk"): 1, ("-", 0, "auth_failed:no_config"): 1,
                              ("branch", 2, "negotiation_failed:no_proposal_chosen"): 1}
    assert stats.dead_peers == {("branch", 2): 1}
    assert stats.status() == {
        "events": {"ike_up": 4, "peer_dead": 1},
        "failures": {"auth_failed:bad_psk": 1, "auth_failed:no_config": 1,
                     "negotiation_failed:no_proposal_chosen": 1},
    }
    v2 = stats.snapshot()["handshakes"][2]
    assert dict(v2["buckets"])["0.005"] == 1 and dict(v2["buckets"])["0.5"] == 2
    assert abs(v2["sum"] - 0.304) < 1e-9


def test_histogram_is_cumulative_with_inf() -> None:
    h = Histogram()
    for value in (0.001, 0.005, 0.006, 100.0):
        h.observe(value)
    buckets = dict(h.cumulative())
    assert buckets["0.005"] == 2  # upper bounds are inclusive (le)
    assert buckets["0.01"] == 3 and buckets["30.0"] == 3 and buckets["+Inf"] == 4 == h.count
