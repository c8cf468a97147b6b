"""The policy's say on peers' CHILD_SA requests, through the IKE endpoints' hook: our two
sans-IO cores back to back (IKEv2 IKE_AUTH and CREATE_CHILD_SA, IKEv1 Quick Mode), the
branch answering with `PolicyRuntime.responder_check`."""

from __future__ import annotations

import textwrap

from ike_loopback import Wire, endpoints, of_type, psk_pair
from test_ikev1_core import establish as establish_v1
from test_ikev1_core import v1_pair, v1_wire

from gateway.config import load_config_text
from gateway.ike.events import ChildSaUp, IkeSaUp, NegotiationFailed
from gateway.ike.v2.constants import ExchangeType
from gateway.policy.runtime import PolicyRuntime, plan_policy

BRANCH_CONFIG = """\
gateway: {name: branch, public_interface: wan0, public_address: 198.51.100.1}
connections:
  to-hq:
    remote: 192.0.2.1
    local_subnets: [10.2.0.0/24]
    remote_subnets: [10.1.0.0/24]
    auth: {method: psk, psk: s3cret-psk-value}
policy:
  filter_lists:
    lans: [{source: 10.2.0.0/24, destination: 10.1.0.0/24}]
  rules:
    - {name: lans, filter_list: lans, filter_action: %s}
"""


def branch_policy(action: str, connection: str = "to-hq") -> PolicyRuntime:
    text = (BRANCH_CONFIG % action).replace("to-hq", connection)
    planned = plan_policy(load_config_text(textwrap.dedent(text)).config)
    assert planned is not None
    return planned


def v2_wire(action: str, connection: str = "to-hq") -> Wire:
    """HQ initiates; the branch (its connection "to-hq") answers as its policy says."""
    hq, branch = psk_pair()
    w = endpoints(hq, branch)
    w.b.child_policy = branch_policy(action, connection).responder_check
    w.a.initiate(hq.name, w.now)
    w.pump()
    return w


def refused(w: Wire) -> NegotiationFailed:
    assert of_type(w.events_a, IkeSaUp) and of_type(w.events_b, IkeSaUp)  # the IKE SA stands
    assert not of_type(w.events_a, ChildSaUp) and not of_type(w.events_b, ChildSaUp)
    [failed] = [e for e in of_type(w.events_b, NegotiationFailed) if e.reason == "policy_refused"]
    return failed


def test_ikev2_a_rule_of_the_connection_accepts() -> None:
    w = v2_wire("require-security, connection: to-hq")
    [up_b] = of_type(w.events_b, ChildSaUp)
    assert [str(t) for t in up_b.local_ts] == ["10.2.0.0/24"] and of_type(w.events_a, ChildSaUp)
    assert not of_type(w.events_b, NegotiationFailed)


def test_ikev2_permit_refuses_with_ts_unacceptable() -> None:
    w = v2_wire("permit")
    failed = refused(w)
    assert failed.stage == "child"
    assert failed.detail == ("CHILD_SA net: 10.1.0.0/24 === 10.2.0.0/24: rule 'lans' permits "
                             "10.1.0.0/24 -> 10.2.0.0/24 in clear")
    [initiator] = of_type(w.events_a, NegotiationFailed)
    assert initiator.reason == "ts_unacceptable"  # what the notify says to the peer


def test_ikev2_a_rule_of_another_connection_refuses() -> None:
    w = v2_wire("require-security, connection: hq-site", connection="hq-site")
    assert refused(w).detail.endswith("rule 'lans' negotiates 10.1.0.0/24 -> 10.2.0.0/24 with connection "
                                      "'hq-site'")


def test_ikev2_create_child_sa_is_asked_too() -> None:
    hq, branch = psk_pair()
    w = endpoints(hq, branch)
    w.a.initiate(hq.name, w.now)
    w.pump()
    assert len(of_type(w.events_b, ChildSaUp)) == 1
    w.b.child_policy = lambda name, remote, local: "not today"  # the policy changed meanwhile
    assert w.a.rekey(hq.name, w.now) == 1
    w.pump()
    [failed] = [e for e in of_type(w.events_b, NegotiationFailed) if e.reason == "policy_refused"]
    assert failed.detail.endswith(": not today")
    assert any(d.data[18] == ExchangeType.CREATE_CHILD_SA for tag, d in w.log if tag == "a>b")
    assert len(of_type(w.events_b, ChildSaUp)) == 1  # no new pair


def test_without_a_policy_everything_the_connection_allows_is_accepted() -> None:
    hq, branch = psk_pair()
    w = endpoints(hq, branch)
    assert w.b.child_policy is None
    w.a.initiate(hq.name, w.now)
    w.pump()
    assert of_type(w.events_b, ChildSaUp)


def test_ikev1_quick_mode_is_refused_with_invalid_id_information() -> None:
    hq, branch = v1_pair()
    calls = []

    def check(name, remote, local):  # type: ignore[no-untyped-def]
        calls.append((name, [str(t) for t in remote], [str(t) for t in local]))
        return branch_policy("block").responder_check(name, remote, local)

    w = v1_wire(hq, branch)
    w.b.child_policy = check
    w.a.initiate(hq.name, w.now)
    w.pump()
    assert calls == [("to-hq", ["10.1.0.0/24"], ["10.2.0.0/24"])]
    failed = refused(w)
    assert failed.stage == "quick_mode"
    assert failed.detail == "10.1.0.0/24 <=> 10.2.0.0/24: rule 'lans' blocks 10.1.0.0/24 -> 10.2.0.0/24"


def test_ikev1_quick_mode_accepted_by_the_connections_rule() -> None:
    hq, branch = v1_pair()
    w = establish_v1(hq, branch)  # no policy: the baseline
    assert of_type(w.events_b, ChildSaUp)
    w = v1_wire(hq, branch)
    w.b.child_policy = branch_policy("require-security, connection: to-hq").responder_check
    w.a.initiate(hq.name, w.now)
    w.pump()
    assert of_type(w.events_a, ChildSaUp) and of_type(w.events_b, ChildSaUp)
