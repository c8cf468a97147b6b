"""The option negotiation automaton against RFC 1661 4.1's state transition table.

The table below is the RFC's, as printed (both halves, footnote letters and all).  Each
cell is driven through the automaton's real inputs (administrative calls, the timer,
control packets) from the cell's state, and what comes out is compared with the cell:
packets sent (scr/sca/scn/str/sta/scj), layer calls (tlu/tld/tls/tlf), ser, the restart
counter (irc/zrc) and the next state.  A "-" cell must change nothing and be counted.
The code's table is a separate transcription (per state, in Python), so a slip in either
shows up here.
"""

from __future__ import annotations

import pytest

from gateway.ppp.automaton import ACK, Automaton, Event, OptionHandler, Reply, State, nak
from gateway.ppp.frame import ControlPacket, Option, encode_options

RFC_1661_TABLE_LEFT = """
      |    0         1         2         3         4         5
Events| Initial   Starting  Closed    Stopped   Closing   Stopping
------+-----------------------------------------------------------
 Up   |    2     irc,scr/6     -         -         -         -
 Down |    -         -         0       tls/1       0         1
 Open |  tls/1       1     irc,scr/6     3r        5r        5r
 Close|    0       tlf/0       2         2         4         4
  TO+ |    -         -         -         -       str/4     str/5
  TO- |    -         -         -         -       tlf/2     tlf/3
 RCR+ |    -         -       sta/2 irc,scr,sca/8   4         5
 RCR- |    -         -       sta/2 irc,scr,scn/6   4         5
 RCA  |    -         -       sta/2     sta/3       4         5
 RCN  |    -         -       sta/2     sta/3       4         5
 RTR  |    -         -       sta/2     sta/3     sta/4     sta/5
 RTA  |    -         -         2         3       tlf/2     tlf/3
 RUC  |    -         -       scj/2     scj/3     scj/4     scj/5
 RXJ+ |    -         -         2         3         4         5
 RXJ- |    -         -       tlf/2     tlf/3     tlf/2     tlf/3
 RXR  |    -         -         2         3         4         5
"""

RFC_1661_TABLE_RIGHT = """
      |    6         7         8           9
Events| Req-Sent  Ack-Rcvd  Ack-Sent    Opened
------+-----------------------------------------
 Up   |    -         -         -           -
 Down |    1         1         1         tld/1
 Open |    6         7         8           9r
 Close|irc,str/4 irc,str/4 irc,str/4 tld,irc,str/4
  TO+ |  scr/6     scr/6     scr/8         -
  TO- |  tlf/3p    tlf/3p    tlf/3p        -
 RCR+ |  sca/8   sca,tlu/9   sca/8   tld,scr,sca/8
 RCR- |  scn/6     scn/7     scn/6   tld,scr,scn/6
 RCA  |  irc/7     scr/6x  irc,tlu/9   tld,scr/6x
 RCN  |irc,scr/6   scr/6x  irc,scr/8   tld,scr/6x
 RTR  |  sta/6     sta/6     sta/6   tld,zrc,sta/5
 RTA  |    6         6         8       tld,scr/6
 RUC  |  scj/6     scj/7     scj/8       scj/9
 RXJ+ |    6         6         8           9
 RXJ- |  tlf/3     tlf/3     tlf/3   tld,irc,str/5
 RXR  |    6         7         8         ser/9
"""


def parse(text: str, first_state: int) -> dict[tuple[int, str], tuple[list[str], int] | None]:
    cells: dict[tuple[int, str], tuple[list[str], int] | None] = {}
    for line in text.strip().splitlines():
        label, _, rest = line.partition("|")
        label = label.strip()
        if label in ("", "Events") or label.startswith("-"):
            continue
        for offset, cell in enumerate(rest.split()):
            state = first_state + offset
            if cell == "-":
                cells[(state, label)] = None
                continue
            actions, _, target = cell.rpartition("/") if "/" in cell else ("", "", cell)
            cells[(state, label)] = ([a for a in actions.split(",") if a], int(target.rstrip("rpx")))
    return cells


TABLE = parse(RFC_1661_TABLE_LEFT, 0) | parse(RFC_1661_TABLE_RIGHT, 6)
EVENTS = ["Up", "Down", "Open", "Close", "TO+", "TO-", "RCR+", "RCR-", "RCA", "RCN", "RTR", "RTA", "RUC",
          "RXJ+", "RXJ-", "RXR"]
SEND_CODES = {"scr": 1, "sca": 2, "scn": 3, "str": 5, "sta": 6, "scj": 7}
MAX_CONFIGURE, MAX_TERMINATE, START_COUNT = 10, 2, 5
OPTION = Option(1, b"\x05\xdc")


class Recorder(OptionHandler):
    """Records what the automaton does; accepts or Naks the one option by ``accept``."""

    name = "TEST"

    def __init__(self) -> None:
        self.log: list[str] = []
        self.drops: list[str] = []
        self.accept = True
        self.sent: list[ControlPacket] = []

    def send(self, packet: ControlPacket) -> None:
        self.log.append(f"send{packet.code}")
        self.sent.append(packet)

    def drop(self, reason: str) -> None:
        self.drops.append(reason)

    def check_request(self, options: list[Option]) -> tuple[list[Reply], list[Option]]:
        return [ACK if self.accept else nak(Option(1, b"\x05\x78")) for _ in options], []

    def extension(self, packet: ControlPacket, opened: bool) -> Event | None:
        return Event.RXR if packet.code == 9 else None

    def serve(self, packet: ControlPacket) -> None:
        self.log.append("ser")

    def layer_up(self) -> None:
        self.log.append("tlu")

    def layer_down(self) -> None:
        self.log.append("tld")

    def layer_started(self) -> None:
        self.log.append("tls")

    def layer_finished(self, event: Event, state: State) -> None:
        self.log.append("tlf")


def drive(automaton: Automaton, handler: Recorder, event: str) -> None:
    """Make ``event`` happen through the automaton's real inputs."""
    request = ControlPacket(1, 9, OPTION.encode())
    if event == "Up":
        automaton.up(1.0)
    elif event == "Down":
        automaton.down(1.0)
    elif event == "Open":
        automaton.open(1.0)
    elif event == "Close":
        automaton.close(1.0)
    elif event in ("TO+", "TO-"):
        automaton.restart_count = START_COUNT if event == "TO+" else 0
        automaton.deadline = 0.5
        automaton.on_timer(1.0)
    elif event == "RCR+":
        automaton.receive(request, 1.0)
    elif event == "RCR-":
        handler.accept = False
        automaton.receive(request, 1.0)
    elif event == "RCA":
        automaton.receive(ControlPacket(2, 7, b""), 1.0)
    elif event == "RCN":
        automaton.receive(ControlPacket(3, 7, OPTION.encode()), 1.0)
    elif event == "RTR":
        automaton.receive(ControlPacket(5, 3, b""), 1.0)
    elif event == "RTA":
        automaton.receive(ControlPacket(6, 3, b""), 1.0)
    elif event == "RUC":
        automaton.receive(ControlPacket(99, 3, b"what"), 1.0)
    elif event == "RXJ+":
        automaton.receive(ControlPacket(7, 3, bytes([9, 1, 0, 8, 0, 0, 0, 0])), 1.0)
    elif event == "RXJ-":
        automaton.receive(ControlPacket(7, 3, bytes([1, 1, 0, 4])), 1.0)
    elif event == "RXR":
        automaton.receive(ControlPacket(9, 3, bytes(4)), 1.0)
    else:
        raise AssertionError(event)


def expected_log(actions: list[str]) -> list[str]:
    out = []
    for a in actions:
        if a in SEND_CODES:
            out.append(f"send{SEND_CODES[a]}")
        elif a not in ("irc", "zrc"):
            out.append(a)
    return out


CELLS = [(s, e) for s in range(10) for e in EVENTS]


def test_the_transcription_is_complete() -> None:
    assert set(TABLE) == set(CELLS)
    assert sum(1 for v in TABLE.values() if v is not None) == 120  # 160 cells, 40 of them "-"


@pytest.mark.parametrize(("state", "event"), CELLS, ids=[f"{State(s).name}-{e}" for s, e in CELLS])
def test_transition(state: int, event: str) -> None:
    handler = Recorder()
    automaton = Automaton(handler, max_configure=MAX_CONFIGURE, max_terminate=MAX_TERMINATE, first_id=40)
    automaton.state = State(state)
    automaton.restart_count = START_COUNT
    automaton.request_id = 7  # our outstanding Configure-Request, options: none
    drive(automaton, handler, event)
    cell = TABLE[(state, event)]
    if cell is None:
        assert automaton.state == State(state)
        assert handler.log == []
        assert handler.drops, "an illegal event must be counted"
        return
    actions, target = cell
    assert automaton.state == State(target)
    assert handler.log == expected_log(actions)
    count = automaton.restart_count
    if "zrc" in actions:
        assert count == 0
    elif "irc" in actions:
        sends = sum(1 for a in actions if a in ("scr", "str"))
        assert count == (MAX_TERMINATE if "str" in actions else MAX_CONFIGURE) - sends
    elif event in ("TO+", "TO-"):
        assert count == (START_COUNT if event == "TO+" else 0) - sum(a in ("scr", "str") for a in actions)
    else:
        assert count == START_COUNT - sum(a in ("scr", "str") for a in actions)
    timed = target in (4, 5, 6, 7, 8)
    if not timed:
        assert automaton.deadline is None
    if any(a in actions for a in ("scr", "str", "zrc")):
        assert automaton.deadline == pytest.approx(1.0 + automaton.restart_interval)


# -- beyond the table: RFC 1661 4.6 and 5.1-5.4 --------------------------------------------------
def opened_pair() -> tuple[Automaton, Recorder]:
    handler = Recorder()
    a = Automaton(handler, first_id=0)
    a.up(0.0)
    a.open(0.0)
    return a, handler


def test_configure_request_is_retransmitted_with_its_identifier_then_gives_up() -> None:
    a, h = opened_pair()
    now = 0.0
    while a.deadline is not None:
        now = a.deadline
        a.on_timer(now)
    requests = [p for p in h.sent if p.code == 1]
    assert len(requests) == 10  # Max-Configure
    assert {p.identifier for p in requests} == {1}
    assert now == pytest.approx(30.0)  # 10 transmissions, 3 s apart
    assert a.state is State.STOPPED and h.log[-1] == "tlf"


def test_terminate_request_twice_then_finished() -> None:
    a, h = opened_pair()
    a.receive(ControlPacket(2, 1, b""), 0.1)  # ack our (empty) request
    a.receive(ControlPacket(1, 5, b""), 0.1)  # their empty request: acked, opened
    assert a.state is State.OPENED
    a.close(1.0)
    while a.deadline is not None:
        a.on_timer(a.deadline)
    assert [p.code for p in h.sent].count(5) == 2  # Max-Terminate
    assert a.state is State.CLOSED and h.log[-1] == "tlf"


def test_ack_must_match_identifier_and_options_verbatim() -> None:
    a, h = opened_pair()
    a.receive(ControlPacket(2, 99, b""), 0.1)  # wrong identifier
    a.receive(ControlPacket(2, 1, OPTION.encode()), 0.1)  # options differ
    assert a.state is State.REQ_SENT
    assert h.drops == ["stale_reply", "ack_not_verbatim"]
    a.receive(ControlPacket(2, 1, b""), 0.1)
    assert a.state is State.ACK_RCVD
    a.receive(ControlPacket(2, 1, b""), 0.1)  # a duplicate of the good one
    assert a.state is State.ACK_RCVD and h.drops[-1] == "stale_reply"


def test_naks_turn_into_rejects_after_max_failure() -> None:
    a, h = opened_pair()
    h.accept = False
    for ident in range(7):
        a.receive(ControlPacket(1, ident, OPTION.encode()), 0.1)
    replies = [p for p in h.sent if p.code in (3, 4)]
    assert [p.code for p in replies] == [3] * 5 + [4] * 2  # Max-Failure 5
    assert replies[-1].data == OPTION.encode()  # the Reject carries the option as received
    h.accept = True
    a.receive(ControlPacket(1, 8, OPTION.encode()), 0.1)
    assert h.sent[-1].code == 2 and h.sent[-1].data == OPTION.encode()
    assert a.failures == 0  # an Ack resets the count


def test_reject_takes_precedence_over_nak() -> None:
    class Mixed(Recorder):
        def check_request(self, options: list[Option]) -> tuple[list[Reply], list[Option]]:
            return [nak(Option(1, b"\x05\x78")), Reply("reject")], []

    h = Mixed()
    a = Automaton(h)
    a.up(0.0)
    a.open(0.0)
    odd = Option(77, b"xy")
    a.receive(ControlPacket(1, 3, encode_options([OPTION, odd])), 0.1)
    assert h.sent[-1].code == 4 and h.sent[-1].data == odd.encode()


def test_code_reject_carries_the_packet_truncated() -> None:
    a, h = opened_pair()
    a.reply_limit = 20
    a.receive(ControlPacket(99, 3, bytes(100)), 0.1)
    reject = h.sent[-1]
    assert reject.code == 7 and len(reject.data) == 16 and reject.data[:2] == bytes([99, 3])


def test_a_peer_that_keeps_refusing_is_reported() -> None:
    class Stubborn(Recorder):
        reasons: list[str] = []

        def not_converging(self, what: str) -> None:
            self.reasons.append(what)

    h = Stubborn()
    a = Automaton(h)
    a.up(0.0)
    a.open(0.0)
    for _ in range(11):
        a.receive(ControlPacket(3, a.request_id or 0, b""), 0.1)
    assert h.reasons and "11" in h.reasons[0]
