"""The IKEv1 endpoint: every ISAKMP SA of one gateway, behind the same sans-IO interface as
the IKEv2 endpoint (receive / datagrams_to_send / next_event / get_timer / handle_timer).

ISAKMP SAs are found by their cookie pair (RFC 2408 2.5.3), never by address: several
clients behind one NAT (one public address, different source ports) each get their own
SA, Quick Modes and IPsec SAs.  A new Main Mode is matched to a connection by the peer's
address, its proposals and the authentication method (with pre-shared keys the identity
arrives encrypted in message 5, after the key is already in use: RFC 2409 5.4).
Aggressive Mode is refused: it sends the identity in clear and hands an eavesdropper a
hash to crack the pre-shared key offline.

IKEv1 has no stateless cookie exchange (RFC 2408 2.5.3 leaves it to the implementation),
so Main Mode state is bounded like a TCP SYN cache (`ResponderLimits`):

* *unproven* half-open SAs (message 1 answered; the peer has not shown that it receives
  at its address) cost about 3.5 KB (tracemalloc) and no DH.  At most ``half_open_max``
  exist; a new message 1 beyond that evicts the oldest (``half_open_evicted``).  A flood
  of R messages per second thus leaves each entry ``half_open_max / R`` seconds (2000 at
  5000/s: 0.4 s), far longer than the round trip an honest peer needs to send message 3.
* *proven* half-open SAs (message 3 came back with our responder cookie, which only a peer
  at that address can know; the DH is done here) are limited per source address
  (``half_open_per_source``, for the reasons the IKEv2 endpoint gives) and in all
  (``half_open_max``).  Beyond either, message 3 is dropped without an answer (counted
  ``half_open_source_limit`` / ``half_open_limit``); the peer retransmits it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from gateway.ike.endpointbase import EndpointBase
from gateway.ike.events import Datagram, NegotiationFailed, PeerMoved
from gateway.ike.settings import PeerConfig, ResponderLimits, Timing
from gateway.ike.signatures import ikev1_method
from gateway.ike.v1.constants import IKE_PORT, NATT_PORT, AuthMethod, ExchangeType, NotifyType, ProtocolId
from gateway.ike.v1.isakmpsa import PHASE1_REKEY_RETRY, RETIRE_DELAY, IsakmpSa, State, vendor_name
from gateway.ike.v1.message import (
    Header,
    MalformedMessage,
    Message,
    NotifyPayload,
    SaPayload,
    VendorIdPayload,
    decode_payloads,
    encode_payloads,
)
from gateway.ike.v1.negotiation import describe_phase1, phase1_transforms, select_phase1


class IkeV1Endpoint(EndpointBase):
    def __init__(self, local_address: str, configs: list[PeerConfig], *,
                 random: Callable[[int], bytes] = os.urandom, timing: Timing | None = None,
                 half_open_max: int = ResponderLimits.half_open_max,
                 half_open_per_source: int = ResponderLimits.half_open_per_source) -> None:
        super().__init__(local_address, configs, random, timing)
        self.half_open_max = half_open_max
        self.half_open_per_source = half_open_per_source
        self._sas: dict[bytes, IsakmpSa] = {}  # by our cookie
        #: responder SAs before MM3 (unproven), oldest first
        self._by_icookie: dict[tuple[bytes, str, int], IsakmpSa] = {}
        #: responder SAs between MM3 and MM5 (proven), by our cookie
        self._proven: dict[bytes, IsakmpSa] = {}

    def set_limits(self, limits: ResponderLimits) -> None:
        """New responder limits (a config reload); SAs that exist stay."""
        self.half_open_max = limits.half_open_max
        self.half_open_per_source = limits.half_open_per_source

    @property
    def half_open(self) -> int:
        """Responder ISAKMP SAs in Main Mode (before message 5), proven or not."""
        return len(self._by_icookie) + len(self._proven)

    # -- the Context an IsakmpSa sees (beyond EndpointBase) -----------------------------------
    def initial_contact(self, sa: IsakmpSa) -> None:
        """RFC 2407 4.6.3.3: the peer lost its state; drop what we hold for the same peer
        (same connection, identity and address), IPsec SAs included."""
        self.touch(sa)  # (its state moved on: out of the half-open tables at _collect)
        if sa.peer_id is None:
            return self._collect()
        for other in self._same_peer(sa.peer_id, sa):  # (the index by identity, not a scan)
            if other.config is sa.config and other.remote[0] == sa.remote[0] \
                    and other.peer_id is not None and other.peer_id.matches(sa.peer_id) \
                    and other.state is not State.CLOSED:
                other.close("replaced: peer sent INITIAL-CONTACT", 0.0)
        self._collect()

    def on_established(self, sa: IsakmpSa, now: float) -> None:
        self._backoff.pop(sa.name, None)
        if sa.initiator:
            return
        # The peer rekeyed Phase 1 with a new Main Mode: the IPsec SAs it made under the
        # old ISAKMP SA now belong to the new one (what strongSwan does, adopt_children).
        if sa.peer_id is None:
            return
        for other in self._same_peer(sa.peer_id, sa):
            if other.children and other.state is State.ESTABLISHED and sa.successor_of(other):
                sa.children += other.children
                self._note("ikev1.rekeyed", connection=sa.name, old=other.ident, new=sa.ident,
                           children=len(other.children))
                other.children = []
                other.replaced = True
                other.retire_at = now + RETIRE_DELAY  # then delete it, as strongSwan does
                self.touch(other)

    def successor(self, sa: IsakmpSa) -> IsakmpSa | None:
        """The newest other established ISAKMP SA with the same peer (connection, address and port,
        identity): where IPsec SAs go when the peer deletes the SA that made them."""
        if sa.peer_id is None:
            return None
        found = [o for o in self._same_peer(sa.peer_id, sa) if o.state is State.ESTABLISHED
                 and o.successor_of(sa) and (o.established_at or 0) >= (sa.established_at or 0)]
        return max(found, key=lambda o: o.established_at or 0) if found else None

    def rekey_phase1(self, sa: IsakmpSa, now: float) -> None:
        """Make-before-break Phase 1 rekey: a new Main Mode; the IPsec SAs move to it.

        Not while a Quick Mode runs on the old SA: the peer adopts the IPsec SAs the old
        SA has when the new one is up (strongSwan's adopt_children), so one that a late
        Quick Mode makes stays behind and dies with the old SA. A connection open to any
        peer rekeys toward the address and port the peer's SA uses (its NAT mapping).
        """
        self.touch(sa)
        if sa.quick:
            sa.rekey_at = now + PHASE1_REKEY_RETRY
            self._note("ikev1.rekey_deferred", "debug", connection=sa.name, ike_sa=sa.ident,
                       quick_modes=len(sa.quick))
            return
        toward = sa.remote if sa.config.remote_address is None else None
        new = self._start(sa.name, now, toward=toward, local_port=sa.local[1] if toward else None)
        new.reauth_of = sa
        sa.replacement = new
        self._note("ikev1.rekeying", connection=sa.name, old=sa.ident, new=new.ident)

    # -- initiating -----------------------------------------------------------------------------
    def _start(self, name: str, now: float, *, toward: tuple[str, int] | None = None,
               local_port: int | None = None) -> IsakmpSa:
        cfg = self.configs[name]
        if toward is None:
            assert cfg.remote_address is not None, "a connection open to any peer has nobody to call"
            toward = (cfg.remote_address, cfg.remote_port)
            self._next_attempt(name, now)
        if local_port is None:
            local_port = NATT_PORT if toward[1] == NATT_PORT else IKE_PORT
        sa = IsakmpSa(self, initiator=True, config=cfg, icookie=self._new_cookie(), rcookie=bytes(8),
                      local=(self.local_address, local_port), remote=toward, now=now)
        self._sas[sa.icookie] = sa
        self._note("ike.initiate", connection=name, peer=sa.remote_str, version=1)
        sa.start(now)
        self.touch(sa)
        return sa

    def _new_cookie(self) -> bytes:
        while True:
            cookie = self._random(8)
            if cookie != bytes(8) and cookie not in self._sas:
                return cookie

    def _active(self, name: str) -> bool:
        return any(sa.name == name and sa.state not in (State.CLOSED, State.DELETING) and not sa.replaced
                   for sa in self._sas.values())

    def _delete_sa(self, sa: IsakmpSa, now: float, reason: str) -> None:
        sa.delete(now, reason=reason)

    def rekey(self, name: str, now: float, *, ike: bool = False) -> int:
        count = 0
        for sa in list(self._sas.values()):
            if sa.name == name and sa.state is State.ESTABLISHED and not sa.replaced:
                if ike:
                    self.rekey_phase1(sa, now)
                else:
                    for child in list(sa.children):
                        if child.state == "installed":
                            sa.start_quick_mode(child.config, now, rekey=child)
                self._touch_peer(sa)
                count += 1
        return count

    # -- receiving --------------------------------------------------------------------------------
    def receive(self, data: bytes, local_port: int, remote: tuple[str, int], now: float) -> None:
        try:
            header = Header.decode(data)
        except MalformedMessage:
            return self._count("malformed")
        if header.version >> 4 != 1:
            return self._count("bad_version")
        if header.exchange == ExchangeType.AGGRESSIVE:
            self._count("aggressive_mode_refused")
            self._note("ikev1.aggressive_mode_refused", "warning", peer=f"{remote[0]}:{remote[1]}",
                       detail="Aggressive Mode sends the identity in clear and exposes the pre-shared key "
                              "to offline cracking; use Main Mode")
            return self._notify_clear(header, local_port, remote, NotifyType.INVALID_EXCHANGE_TYPE)
        if header.exchange == ExchangeType.INFORMATIONAL and not header.encrypted:
            sa = self._initiator_sa_for_notify(data, header)
            if sa is not None:
                sa.receive(data, header, now)
                self._touch_peer(sa)
                self._collect()
                return
        if header.rcookie == bytes(8):
            if header.exchange != ExchangeType.MAIN:
                return self._count("unknown_cookie")
            existing = self._by_icookie.get((header.icookie, remote[0], remote[1]))
            if existing is not None and existing.state is not State.CLOSED:
                existing.receive(data, header, now)
                self.touch(existing)
                return
            return self._on_mm1(data, header, local_port, remote, now)
        sa = self._sas.get(header.rcookie) or self._sas.get(header.icookie)
        if sa is None or sa.icookie != header.icookie or (sa.rcookie != header.rcookie
                                                          and sa.rcookie != bytes(8)):
            return self._count("unknown_cookie")
        if not sa.initiator and sa.state is State.MM_SA and header.exchange == ExchangeType.MAIN \
                and not self._admit_proven(remote[0]):
            return  # message 3: the peer has proven its address, but there is no room for it
        # NAT-T float (RFC 3947 4) or a changed NAT mapping: follow the peer.
        if (sa.state in (State.MM_SA, State.MM_KE) or sa.remote[0] == remote[0]) \
                and (local_port, remote) != (sa.local[1], sa.remote):
            moved = sa.state is State.ESTABLISHED
            if moved:
                self._note("ikev1.peer_moved", connection=sa.name, old=sa.remote_str,
                           new=f"{remote[0]}:{remote[1]}")
            sa.local, sa.remote = (self.local_address, local_port), remote
            if moved:
                self.emit(PeerMoved(sa.name, sa.ident, remote, tuple(c.spi_in for c in sa.children)))
        sa.receive(data, header, now)
        self._touch_peer(sa)
        self._collect()

    def _initiator_sa_for_notify(self, data: bytes, header: Header) -> IsakmpSa | None:
        """A clear notification refusing our Main Mode: by our initiator cookie in the header
        (RFC 2408 5: the responder has no cookie yet) or, as SoftEther sends it, in the
        notification's SPI under a fresh header cookie."""
        cookies = [header.icookie]
        try:
            payloads = decode_payloads(header.next_payload, data[28:header.length])
        except MalformedMessage:
            payloads = []
        cookies += [p.spi[:8] for p in payloads if isinstance(p, NotifyPayload) and len(p.spi) >= 8]
        for cookie in cookies:
            sa = self._sas.get(cookie)
            if sa is not None and sa.initiator and sa.state is State.MM_SA:
                return sa
        return None

    def _on_mm1(self, data: bytes, header: Header, local_port: int, remote: tuple[str, int],
                now: float) -> None:
        peer = f"{remote[0]}:{remote[1]}"
        try:
            payloads = decode_payloads(header.next_payload, data[28:header.length])
        except MalformedMessage as exc:
            self._count("malformed")
            self._note("ikev1.malformed", "warning", peer=peer, detail=str(exc))
            return
        msg = Message(header, payloads, data)
        sa_p = msg.find(SaPayload)
        if not isinstance(sa_p, SaPayload) or not sa_p.proposals:
            self._count("malformed")
            return self._notify_clear(header, local_port, remote, NotifyType.PAYLOAD_MALFORMED)
        vids = [vendor_name(p.data) for p in msg.all(VendorIdPayload) if isinstance(p, VendorIdPayload)]
        candidates = [c for c in self.configs.values() if c.remote_address == remote[0]]
        candidates += [c for c in self.configs.values() if c.remote_address is None]
        if not candidates:
            self._count("no_config")
            self.emit(NegotiationFailed(None, peer, "main_mode", "no_config",
                                        f"no IKEv1 connection is configured for peer {remote[0]}"))
            return self._notify_clear(header, local_port, remote, NotifyType.NO_PROPOSAL_CHOSEN)
        theirs = [t for p in sa_p.proposals if p.protocol == ProtocolId.ISAKMP for t in p.transforms]
        number = next((p.number for p in sa_p.proposals if p.protocol == ProtocolId.ISAKMP), 1)
        for cfg in candidates:
            # one method for both sides (RFC 2409 5): the PSK, or our own key's signature
            method = AuthMethod.PSK if cfg.psk is not None else ikev1_method(cfg.private_key)
            picked = select_phase1(cfg.ike_proposals, {method}, theirs)
            if picked is None:
                continue
            transform, suite = picked
            self._make_room(now)
            sa = IsakmpSa(self, initiator=False, config=cfg, icookie=header.icookie,
                          rcookie=self._new_cookie(),
                          local=(self.local_address, local_port), remote=remote, now=now)
            self._sas[sa.rcookie] = sa
            self.touch(sa)
            key = (header.icookie, remote[0], remote[1])
            self._by_icookie.pop(key, None)  # a closed one, not collected yet: the new one goes last
            self._by_icookie[key] = sa
            sa.half_open_key = key
            self._note("ikev1.main_mode", connection=cfg.name, peer=peer, proposal=suite.name,
                       vendor_ids=", ".join(vids) or "none")
            sa.respond_mm1(msg, transform, suite, number, now)
            return
        self._count("no_proposal_chosen")
        ours = [t for cfg in candidates for t in phase1_transforms(
            cfg.ike_proposals, AuthMethod.PSK if cfg.psk is not None else ikev1_method(cfg.private_key),
            cfg.ike_lifetime)]
        self.emit(NegotiationFailed(candidates[0].name, peer, "main_mode", "no_proposal_chosen",
                                    f"peer offered {describe_phase1(theirs)}; "
                                    f"we accept {describe_phase1(ours)}"))
        self._notify_clear(header, local_port, remote, NotifyType.NO_PROPOSAL_CHOSEN)

    def _notify_clear(self, request: Header, local_port: int, remote: tuple[str, int], kind: int) -> None:
        """An unprotected Informational answer that keeps no state (RFC 2408 5)."""
        notify = NotifyPayload(kind, ProtocolId.ISAKMP, request.icookie + request.rcookie)
        first, body = encode_payloads([notify])
        header = Header(request.icookie, request.rcookie, first, ExchangeType.INFORMATIONAL, 0, 0,
                        28 + len(body))
        self._out.append(Datagram(header.encode() + body, local_port, remote))

    def _make_room(self, now: float) -> None:
        """Evict the oldest unproven half-open SAs until a new one fits (a SYN cache)."""
        while self._by_icookie and len(self._by_icookie) >= self.half_open_max:
            key = next(iter(self._by_icookie))
            sa = self._by_icookie.pop(key)
            sa.half_open_key = None
            if sa.state is State.MM_SA:
                sa.close("evicted: too many half-open Main Modes", now, report=False)
                self._sas.pop(sa.rcookie, None)
                self._forget_timer(sa)
                # out of both half-open tables already: nothing to settle, and in a flood
                # thousands of evicted SAs would wait in memory for the next settling
                self._unsettled.pop(sa, None)
                self._count("half_open_evicted")
            elif sa.state is State.MM_KE:
                self._proven[sa.rcookie] = sa

    def _admit_proven(self, address: str) -> bool:
        """Room for one more proven half-open SA from ``address`` (its message 3)?"""
        if len(self._proven) >= self.half_open_max:
            self._count("half_open_limit")
            return False
        if sum(1 for sa in self._proven.values() if sa.remote[0] == address) >= self.half_open_per_source:
            self._count("half_open_source_limit")
            return False
        return True

    def _waiting_queue(self) -> Iterable[IsakmpSa]:
        return self._by_icookie.values()

    def _waiting(self, sa: IsakmpSa) -> bool:
        return sa.state is State.MM_SA and not sa.initiator  # only its half-open timeout runs

    def _check_tables(self) -> None:
        assert all(sa.state is State.MM_SA for sa in self._by_icookie.values())
        assert all(sa.state is State.MM_KE for sa in self._proven.values())

    def _settle(self, sas: Iterable[IsakmpSa]) -> None:
        """Half-open SAs that moved on leave their table (message 3: unproven -> proven;
        message 5 or a close: gone): only the SAs touched since are looked at, not both
        tables after every message."""
        for sa in sas:
            key = sa.half_open_key
            if key is not None and sa.state is not State.MM_SA:
                sa.half_open_key = None
                if self._by_icookie.get(key) is sa:
                    del self._by_icookie[key]
                    if sa.state is State.MM_KE:
                        self._proven[sa.rcookie] = sa
            if sa.state is not State.MM_KE and self._proven.get(sa.rcookie) is sa:
                del self._proven[sa.rcookie]
