"""The IKEv2 endpoint: every IKE SA of one gateway, behind a sans-IO interface.

    endpoint.receive(data, local_port, remote, now)   # an IKE message (no non-ESP marker)
    endpoint.datagrams_to_send()                      # -> [Datagram]
    endpoint.next_event()                             # -> ChildSaUp | IkeSaDown | ... | None
    endpoint.get_timer() / endpoint.handle_timer(now)
    endpoint.initiate(name, now) / endpoint.terminate(name, now)

It routes messages to IKE SAs by SPI, answers new IKE_SA_INIT requests (choosing the
connection and proposal, asking for a COOKIE when too many SAs are half-open, RFC 7296
2.6), allocates CHILD_SA SPIs, and keeps "start" connections up (re-initiating with
backoff).  Shaped like aioquic's QuicConnection: no sockets, no clock, no threads.

Half-open SAs (answered IKE_SA_INIT, no IKE_AUTH yet) are what a flood makes a responder
keep, so they are bounded three ways (`ResponderLimits`, RFC 8019):

* ``cookie_threshold``: from that many half-open SAs on, a request must carry the COOKIE
  we computed for its address (2.6).  A spoofer never receives one, so SAs made without a
  cookie ("unproven") number at most ``cookie_threshold``, however many addresses it uses.
* ``half_open_per_source``: half-open SAs whose initiator returned a cookie ("proven": it
  receives at that address), per address.  Only proven ones count, so nobody can spend an
  address's budget without receiving at it.  The default, 100, is far above what one
  honest peer needs (one half-open SA for a round trip, a second while an abandoned
  attempt times out) and above what a carrier-grade NAT sends from one address: with
  1:32..1:64 subscribers per public address, even all of them reconnecting at once (after
  the NAT or our gateway restarted) hold at most 64 half-open SAs for about a round trip.
  An attacker with one real address holds at most ``cookie_threshold`` + 100 of them.
* ``half_open_max``: all half-open SAs.  Beyond it even a valid cookie does not help: the
  request is dropped without state and without an answer (counted), and the initiator
  retransmits until a half-open SA times out (``Timing.half_open_timeout``) or finishes.
  A half-open SA takes about 4.5 KB (tracemalloc), so the default 2000 come to about
  10 MB.

Every refusal is counted in ``counters`` (``cookie_sent``, ``half_open_source_limit``,
``half_open_limit``); none logs a line (a flood must not become a log flood).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import struct
from collections import Counter
from collections.abc import Callable, Iterable

from gateway.crypto.dh import DH_GROUPS
from gateway.ike.endpointbase import EndpointBase
from gateway.ike.events import Datagram, NegotiationFailed
from gateway.ike.pool import AddressPool
from gateway.ike.settings import PeerConfig, ResponderLimits, Timing
from gateway.ike.v2.constants import (
    IKE_PORT,
    IKE_VERSION,
    NATT_PORT,
    ExchangeType,
    NotifyType,
    ProtocolId,
    TransformType,
)
from gateway.ike.v2.ikesa import IkeSa, State
from gateway.ike.v2.message import (
    Header,
    KePayload,
    MalformedMessage,
    Message,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    Transform,
    decode_payloads,
    encode_payloads,
)
from gateway.ike.v2.negotiation import build_proposals, describe_proposals, select

#: how long one COOKIE secret is used before the next (RFC 7296 2.6: "changed from time to time")
COOKIE_SECRET_LIFETIME = 300.0


class IkeV2Endpoint(EndpointBase):
    def __init__(self, local_address: str, configs: list[PeerConfig], *,
                 random: Callable[[int], bytes] = os.urandom, timing: Timing | None = None,
                 cookie_threshold: int = ResponderLimits.cookie_threshold,
                 half_open_max: int = ResponderLimits.half_open_max,
                 half_open_per_source: int = ResponderLimits.half_open_per_source,
                 pools: dict[str, AddressPool] | None = None) -> None:
        super().__init__(local_address, configs, random, timing)
        self.cookie_threshold = cookie_threshold
        self.half_open_max = half_open_max
        self.half_open_per_source = half_open_per_source
        #: COOKIE secrets by version (2.6: changed from time to time; a cookie made with the
        #: one before still counts, so an initiator caught by the change is not refused)
        self._cookie_version = 1
        self._cookie_secrets = {1: random(32)}
        self._cookie_rotate_at: float | None = None
        self._sas: dict[bytes, IkeSa] = {}  # by our SPI
        #: responder SAs before IKE_AUTH, by (SPIi, address, port); the proven ones (their
        #: initiator returned a cookie) also in _proven_keys and counted by address in _proven
        self._half_open: dict[tuple[bytes, str, int], IkeSa] = {}
        self._proven_keys: set[tuple[bytes, str, int]] = set()
        self._proven: Counter[str] = Counter()
        self.pools = pools or {}

    def set_limits(self, limits: ResponderLimits) -> None:
        """New responder limits (a config reload); SAs that exist stay."""
        self.cookie_threshold = limits.cookie_threshold
        self.half_open_max = limits.half_open_max
        self.half_open_per_source = limits.half_open_per_source

    @property
    def half_open(self) -> int:
        """Responder SAs that answered IKE_SA_INIT and wait for IKE_AUTH."""
        return len(self._half_open)

    # -- the Context an IkeSa sees (beyond EndpointBase) -------------------------------------
    def configs_for(self, remote_ip: str) -> list[PeerConfig]:
        exact = [c for c in self.configs.values() if c.remote_address == remote_ip]
        return exact + [c for c in self.configs.values() if c.remote_address is None]

    def lease(self, pool: str, owner: str) -> ipaddress.IPv4Address:
        return self.pools[pool].lease(owner)

    def release(self, pool: str, address: ipaddress.IPv4Address) -> None:
        if pool in self.pools:
            self.pools[pool].release(address)

    def pool_dns(self, pool: str) -> tuple[ipaddress.IPv4Address, ...]:
        return self.pools[pool].dns if pool in self.pools else ()

    def adopt(self, ike_sa: IkeSa) -> None:
        self._sas[ike_sa.our_spi] = ike_sa
        self.touch(ike_sa)

    def initial_contact(self, ike_sa: IkeSa) -> None:
        """2.4: the peer has no other IKE SA with us; forget any we still hold for it (the
        same connection and authenticated identity; from the index by identity, not a scan)."""
        self.touch(ike_sa)  # (established now: out of the half-open table at _collect)
        if ike_sa.peer_id is None:
            return self._collect()
        for other in self._same_peer(ike_sa.peer_id, ike_sa):
            if other.config is ike_sa.config and other.peer_id is not None \
                    and other.peer_id.matches(ike_sa.peer_id) and other.state is not State.CLOSED:
                other.close("replaced: peer sent INITIAL_CONTACT", 0.0)
        self._collect()

    # -- initiating ---------------------------------------------------------------------
    def reauthenticate(self, ike_sa: IkeSa, now: float) -> None:
        """2.8.3: a new IKE SA (and CHILD_SA) from scratch; the old one goes once it is up."""
        new = self._start(ike_sa.name, now, reauth_of=ike_sa)
        self._note("ike.reauthenticating", connection=ike_sa.name, old=ike_sa.ident, new=new.ident)

    def _start(self, name: str, now: float, reauth_of: IkeSa | None = None) -> IkeSa:
        cfg = self.configs[name]
        assert cfg.remote_address is not None
        self._next_attempt(name, now)
        remote_port = NATT_PORT if cfg.remote_port == NATT_PORT else cfg.remote_port
        local_port = NATT_PORT if remote_port == NATT_PORT else IKE_PORT
        sa = IkeSa(self, initiator=True, config=cfg, spi_i=self._new_ike_spi(), spi_r=bytes(8),
                   local=(self.local_address, local_port), remote=(cfg.remote_address, remote_port), now=now)
        self._sas[sa.spi_i] = sa
        sa.reauth_of = reauth_of
        self._note("ike.initiate", connection=name, peer=sa.remote_str)
        sa.start(now)
        self.touch(sa)
        return sa

    def _new_ike_spi(self) -> bytes:
        while True:
            spi = self._random(8)
            if spi != bytes(8) and spi not in self._sas:
                return spi

    def _active(self, name: str) -> bool:
        return any(sa.name == name and sa.state not in (State.CLOSED, State.REKEYED, State.DELETING)
                   for sa in self._sas.values())

    def _delete_sa(self, sa: IkeSa, now: float, reason: str) -> None:
        sa.delete_ike(now, reason=reason)

    def rekey(self, name: str, now: float, *, ike: bool = False) -> int:
        count = 0
        for sa in list(self._sas.values()):
            if sa.name == name and sa.state is State.ESTABLISHED:
                if ike:
                    sa.rekey_ike(now)
                else:
                    for child in sa.children:
                        sa.rekey_child(child, now)
                self._touch_peer(sa)
                count += 1
        return count

    # -- receiving ------------------------------------------------------------------------
    def receive(self, data: bytes, local_port: int, remote: tuple[str, int], now: float) -> None:
        try:
            header = Header.decode(data)
        except MalformedMessage:
            return self._count("malformed")
        if header.version >> 4 != 2:
            return self._count("bad_version")
        if header.exchange == ExchangeType.IKE_SA_INIT and not header.is_response:
            if header.spi_r != bytes(8) or header.message_id != 0:
                return self._count("malformed")
            key = (header.spi_i, remote[0], remote[1])
            existing = self._half_open.get(key)
            if existing is not None and existing.state is not State.CLOSED:
                existing.receive(data, header, remote, now)
                self.touch(existing)
                return
            return self._on_init_request(data, header, local_port, remote, now)
        if header.from_initiator:
            sa = self._sas.get(header.spi_r)
        else:
            sa = self._sas.get(header.spi_i)
        if sa is None or (header.exchange != ExchangeType.IKE_SA_INIT
                          and (sa.spi_r != header.spi_r or sa.spi_i != header.spi_i)):
            self._count("unknown_spi")
            return
        if sa.state is State.HALF_OPEN:
            sa.local, sa.remote = (self.local_address, local_port), remote  # the initiator may float
        sa.receive(data, header, remote, now)
        self._touch_peer(sa)
        self._collect()

    def _on_init_request(self, data: bytes, header: Header, local_port: int, remote: tuple[str, int],
                         now: float) -> None:
        try:
            payloads = decode_payloads(header.next_payload, data[28:], 28)
        except MalformedMessage as exc:
            self._count("malformed")
            self._note("ike.malformed", "warning", peer=f"{remote[0]}:{remote[1]}", detail=str(exc))
            return
        msg = Message(header, payloads, data)
        sa_p, ke, nonce = msg.find(SaPayload), msg.find(KePayload), msg.find(NoncePayload)
        if not (isinstance(sa_p, SaPayload) and isinstance(ke, KePayload)
                and isinstance(nonce, NoncePayload)):
            self._count("malformed")
            return self._stateless(header, local_port, remote, [NotifyPayload(NotifyType.INVALID_SYNTAX)])
        half_open = len(self._half_open)
        if half_open >= self.half_open_max:
            return self._count("half_open_limit")  # no state, no answer: the initiator retries
        got = msg.notify(NotifyType.COOKIE)
        proven = False
        if got is not None or half_open >= self.cookie_threshold:
            self._rotate_cookie_secret(now)
            expected = self._cookie(nonce.data, remote[0], header.spi_i, self._cookie_version)
            if got is not None:  # made with the secret its first octet names (now or before)
                answered = self._cookie(nonce.data, remote[0], header.spi_i, got.data[0] if got.data else 0)
                proven = hmac.compare_digest(got.data, answered)
            if not proven and half_open >= self.cookie_threshold:
                self._count("cookie_sent")
                return self._stateless(header, local_port, remote,
                                       [NotifyPayload(NotifyType.COOKIE, expected)])
        if proven and self._proven[remote[0]] >= self.half_open_per_source:
            return self._count("half_open_source_limit")
        peer = f"{remote[0]}:{remote[1]}"
        candidates = self.configs_for(remote[0])
        if not candidates:
            self._count("no_config")
            self.emit(NegotiationFailed(None, peer, "ike_init", "no_config",
                                        f"no connection is configured for peer {remote[0]}"))
            return self._stateless(header, local_port, remote, [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)])
        chosen: Proposal | None = None
        config: PeerConfig | None = None
        ours_all: list[Proposal] = []
        for cfg in candidates:
            ours = build_proposals(list(cfg.ike_proposals), ProtocolId.IKE, b"")
            ours_all += ours
            chosen = select(ours, sa_p.proposals)
            if chosen is not None:
                config = cfg
                chosen = _prefer_group(chosen, ours, sa_p.proposals, ke.group)
                break
        if chosen is None or config is None:
            self._count("no_proposal_chosen")
            self.emit(NegotiationFailed(candidates[0].name, peer, "ike_init", "no_proposal_chosen",
                                        f"peer offered {describe_proposals(sa_p.proposals)}; "
                                        f"we accept {describe_proposals(ours_all)}"))
            return self._stateless(header, local_port, remote, [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)])
        group_id = next(t.id for t in chosen.transforms if t.type == TransformType.DH)
        if ke.group != group_id:
            self._count("invalid_ke_sent")
            self._note("ike.invalid_ke", connection=config.name, peer=peer, received=ke.group,
                       wanted=group_id)
            answer = NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, struct.pack("!H", group_id))
            return self._stateless(header, local_port, remote, [answer])
        keyex = DH_GROUPS[group_id].generate(self._random)
        sa = IkeSa(self, initiator=False, config=config, spi_i=header.spi_i, spi_r=self._new_ike_spi(),
                   local=(self.local_address, local_port), remote=remote, now=now)
        if not sa.respond_init(msg, config, chosen, keyex, ke.data, now):
            self._count("invalid_ke")
            return
        self._sas[sa.spi_r] = sa
        self.touch(sa)
        key = (header.spi_i, remote[0], remote[1])
        self._forget_half_open(key)  # a closed SA of the same initiator SPI, not collected yet
        self._half_open[key] = sa
        sa.half_open_key = key
        if proven:
            self._proven_keys.add(key)
            self._proven[remote[0]] += 1

    def _cookie(self, nonce: bytes, address: str, spi_i: bytes, version: int) -> bytes:
        """2.6: <VersionIDofSecret> | Hash(Ni | IPi | SPIi | <secret>); a version we no
        longer (or never) had gives a value no cookie matches."""
        secret = self._cookie_secrets.get(version)
        if secret is None:
            return b""
        return bytes([version]) + hashlib.sha256(nonce + address.encode() + spi_i + secret).digest()

    def _rotate_cookie_secret(self, now: float) -> None:
        """A new secret every COOKIE_SECRET_LIFETIME seconds; the one before stays valid
        until the next change (2.6)."""
        if self._cookie_rotate_at is None:
            self._cookie_rotate_at = now + COOKIE_SECRET_LIFETIME
        elif now >= self._cookie_rotate_at:
            previous = self._cookie_version
            self._cookie_version = previous % 255 + 1
            self._cookie_secrets = {previous: self._cookie_secrets[previous],
                                    self._cookie_version: self._random(32)}
            self._cookie_rotate_at = now + COOKIE_SECRET_LIFETIME

    def _stateless(self, request: Header, local_port: int, remote: tuple[str, int],
                   payloads: list[Payload]) -> None:
        """An IKE_SA_INIT answer that keeps no state (2.6, 1.2)."""
        first, body = encode_payloads(payloads)
        header = Header(request.spi_i, bytes(8), first, ExchangeType.IKE_SA_INIT, 0x20,
                        request.message_id, 28 + len(body), IKE_VERSION)
        self._out.append(Datagram(header.encode() + body, local_port, remote))

    def _check_tables(self) -> None:
        assert all(sa.state is State.HALF_OPEN for sa in self._half_open.values())

    def _settle(self, sas: Iterable[IkeSa]) -> None:
        """Half-open SAs that are no longer (IKE_AUTH done, closed) leave the table: only
        the SAs touched since are looked at, not the whole table after every message."""
        for sa in sas:
            key = sa.half_open_key
            if key is not None and sa.state is not State.HALF_OPEN:
                sa.half_open_key = None
                if self._half_open.get(key) is sa:
                    self._forget_half_open(key)

    def _waiting_queue(self) -> Iterable[IkeSa]:
        return self._half_open.values()

    def _waiting(self, sa: IkeSa) -> bool:
        return sa.state is State.HALF_OPEN  # a responder's, before IKE_AUTH: only its timeout runs

    def _forget_half_open(self, key: tuple[bytes, str, int]) -> None:
        self._half_open.pop(key, None)
        if key in self._proven_keys:
            self._proven_keys.discard(key)
            self._proven[key[1]] -= 1
            if not self._proven[key[1]]:
                del self._proven[key[1]]


def _prefer_group(chosen: Proposal, ours: list[Proposal], theirs: list[Proposal], ke_group: int) -> Proposal:
    """If the peer's KE group is acceptable in the chosen proposal, use it and spare a round
    trip (what strongSwan does too)."""
    peer = next((p for p in theirs if p.number == chosen.number), None)
    if peer is None:
        return chosen
    peer_groups = {t.id for t in peer.of_type(TransformType.DH)}
    for mine in ours:
        my_groups = {t.id for t in mine.of_type(TransformType.DH)}
        others = [t for t in chosen.transforms if t.type != TransformType.DH]
        if ke_group in my_groups and ke_group in peer_groups and all(
                t.key() in {m.key() for m in mine.transforms} for t in others):
            return Proposal(chosen.number, chosen.protocol, chosen.spi,
                            [*others, Transform(TransformType.DH, ke_group)])
    return chosen
