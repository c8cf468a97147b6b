"""Secrets (issue 7): no configured secret, in any encoding, reaches a log, the metrics,
`gateway status`/`sas`/`sessions`/`policy`, the control socket or check-config's errors.

One lab with every kind of secret at once, all at debug level:

* HQ and the branch: an IKEv2 PSK (GatewayPair, keying ike), a second IKEv2 connection
  authenticated by certificates (ECDSA keys from appliance.pki), a manually keyed SA
  (encryption and integrity keys), metrics on, and the branch saves its ESP keys for
  Wireshark (`logging.save_keys`) so the negotiated keys are known to the test too;
* HQ is also the LNS: an IKEv1 group PSK, an L2TP tunnel secret and users stored as an NT
  hash (MS-CHAPv2), a salted hash (PAP) and a clear password (CHAP-MD5);
* LACs in a home network behind NAT dial in with their passwords.

Driven: traffic through each tunnel, a wrong PPP password, a wrong IKEv1 group key, a
wrong IKEv2 PSK (the branch reloaded with one, then back), a reload of HQ that adds a
user, every CLI view in text and JSON, the raw control socket, a /metrics scrape inside
each namespace, and check-config on broken copies of HQ's file.  Then everything gathered
is searched for each secret as text, hex (both cases), base64, ``0x`` hex, the NT hash,
the salted hash and its parts, the private keys' PEM body lines and scalars, and the ESP
keys the branch saved.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_support import NETNS, REPO, assert_lab_gone, lab, lab_prefix, wait_for

from appliance import pki
from appliance.lab.dialup import HomeNetwork, lac_config, lns_sections
from appliance.lab.gateways import GatewayPair, LabGateway, write_config
from appliance.lab.topology import Site, Topology, wait_text
from gateway.control.protocol import request
from gateway.ppp.auth import nt_hash, salted_hash

pytestmark = NETNS

PREFIX = lab_prefix("sec")
HQ_LAN_HOST = "10.1.0.10"
MANUAL_PEER = "198.51.100.77"  # nobody: the manual SA only sends


def _token(label: str) -> str:
    return f"{label}-{os.urandom(9).hex()}"


L2TP_PSK = _token("l2tp-group-key")
WRONG_L2TP_PSK = _token("wrong-group-key")
TUNNEL_SECRET = _token("l2tp-tunnel-secret")
WRONG_IKEV2_PSK = _token("wrong-ikev2-psk")
PASSWORDS = {"alice": _token("alice-pw"), "bob": _token("bob-pap-pw"), "carol": _token("carol-chap-pw"),
             "dave": _token("dave-pw")}
WRONG_PASSWORD = _token("not-alices-pw")
BOB_SALTED = salted_hash(PASSWORDS["bob"])
MANUAL_KEYS = {name: os.urandom(32) for name in ("out_enc", "out_integ", "in_enc", "in_integ")}


@dataclass
class Secrets:
    """Every secret with its encodings: needle -> what it is (never the value itself)."""

    needles: dict[str, str] = field(default_factory=dict)

    def add_bytes(self, what: str, value: bytes) -> None:
        assert len(value) >= 8, what  # shorter needles could match by chance
        forms = {"hex": value.hex(), "HEX": value.hex().upper(), "0x": "0x" + value.hex(),
                 "base64": base64.b64encode(value).decode().rstrip("="),
                 "base64url": base64.urlsafe_b64encode(value).decode().rstrip("=")}
        if value.isascii() and value.decode().isprintable():
            forms["text"] = value.decode()
        for form, needle in forms.items():
            self.needles.setdefault(needle, f"{what} ({form})")  # base64url is often base64

    def add_text(self, what: str, value: str) -> None:
        self.add_bytes(what, value.encode())

    def add_password(self, what: str, password: str) -> None:
        self.add_text(what, password)
        self.add_bytes(f"NT hash of {what}", nt_hash(password))

    def add_private_key(self, what: str, path: Path) -> None:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if not line.startswith("-----") and len(line) >= 16:
                self.needles[line] = f"{what} (PEM line {i})"
        key = load_pem_private_key(path.read_bytes(), password=None)
        scalar = key.private_numbers().private_value  # type: ignore[union-attr]
        self.add_bytes(f"{what} scalar", scalar.to_bytes((scalar.bit_length() + 7) // 8, "big"))

    def found_in(self, text: str) -> list[str]:
        return sorted({what for needle, what in self.needles.items() if needle in text})


@dataclass
class Run:
    """What the scenario gathered: texts to search, facts to check that it happened."""

    secrets: Secrets
    artifacts: dict[str, str] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)


# -- the lab --------------------------------------------------------------------------------


def _certificates(directory: Path, topo: Topology) -> dict[str, Path]:
    root = pki.make_ca(directory, "Secrets Lab Root", kind="ecdsa256")
    hq = pki.issue(directory, root, "hq-gw", kind="ecdsa256", san_dns=["hq.gateway.lab"],
                   san_ip=[topo.hq.gw_public])
    br = pki.issue(directory, root, "br-gw", kind="ecdsa256", san_dns=["branch.gateway.lab"],
                   san_ip=[topo.branch.gw_public])
    return {"root": root.cert_path, "hq_cert": hq.cert_path, "hq_key": hq.key_path,
            "br_cert": br.cert_path, "br_key": br.key_path}


def _cert_connection(remote: str, local: str, remote_net: str, cert: Path, key: Path, ca: Path,
                     my_id: str, peer_id: str, start: bool) -> dict[str, Any]:
    return {"remote": remote, "local_subnets": [local], "remote_subnets": [remote_net],
            "auth": {"method": "cert", "cert": str(cert), "key": str(key), "ca": [str(ca)],
                     "id": my_id, "remote_id": peer_id},
            "ike": {"start": "start" if start else "none"}}


def _users() -> dict[str, dict[str, Any]]:
    return {"alice": {"nt_hash": nt_hash(PASSWORDS["alice"]).hex()},
            "bob": {"password_hash": BOB_SALTED},
            "carol": {"password": PASSWORDS["carol"]}}


def _pair(topo: Topology, workdir: Path, certs: dict[str, Path], keydir: Path) -> GatewayPair:
    lns = lns_sections(psk=L2TP_PSK, users=_users())
    lns["connections"]["dialin"]["l2tp"]["secret"] = TUNNEL_SECRET
    manual = {
        "remote": MANUAL_PEER, "keying": "manual", "local_subnets": [topo.hq.lan_subnet],
        "remote_subnets": ["10.88.0.0/24"],
        "manual": {"outbound": {"spi": "0x3001", "algorithm": "aes256-sha256",
                                "encryption_key": "0x" + MANUAL_KEYS["out_enc"].hex(),
                                "integrity_key": "0x" + MANUAL_KEYS["out_integ"].hex()},
                   "inbound": {"spi": "0x3002", "algorithm": "aes256-sha256",
                               "encryption_key": "0x" + MANUAL_KEYS["in_enc"].hex(),
                               "integrity_key": "0x" + MANUAL_KEYS["in_integ"].hex()}}}
    hq_certs = _cert_connection(topo.branch.gw_public, "10.10.0.0/24", "10.20.0.0/24", certs["hq_cert"],
                                certs["hq_key"], certs["root"], "hq.gateway.lab", "branch.gateway.lab", False)
    br_certs = _cert_connection(topo.hq.gw_public, "10.20.0.0/24", "10.10.0.0/24", certs["br_cert"],
                                certs["br_key"], certs["root"], "branch.gateway.lab", "hq.gateway.lab", True)
    return GatewayPair(
        topo, workdir, keying="ike", log_level="debug", algorithm="aes256-sha256",
        hq_extra={"pools": lns["pools"], "users": lns["users"],
                  "connections": {**lns["connections"], "manual1": manual, "certs": hq_certs}},
        branch_extra={"connections": {"hqcert": br_certs},
                      "logging": {"level": "debug", "save_keys": str(keydir)}})


def _lac(topo: Topology, client: Site, workdir: Path, name: str, user: str, password: str, method: str,
         psk: str = L2TP_PSK) -> LabGateway:
    config = lac_config(client, remote=topo.hq.gw_public, psk=psk, user=user, password=password,
                        method=method, remote_subnets=[topo.hq.lan_subnet], log_level="debug",
                        secret=TUNNEL_SECRET, redial_min="30s", redial_max="60s")
    return LabGateway.start(client, workdir, name, config)


def _ppp_up(gw: LabGateway) -> None:
    found = wait_for(lambda: "ppp.up " in gw.log_text(), bool, timeout=25)
    assert found, gw.log_tail(40)


def _ike_sa_up(pair: GatewayPair, site: str, connection: str) -> bool:
    return any(sa["name"] == connection and sa["state"] == "established" and sa["children"]
               for sa in pair.status(site, "sas")["ike_sas"])


def _reload(gw: LabGateway, config: dict[str, Any], expect: str = r"config\.reloaded .*") -> None:
    start = len(gw.log_text())
    write_config(gw.config_path, config, "lab gateway (reloaded)")
    os.kill(gw.proc.pid, signal.SIGHUP)
    wait_text(gw.log_text, expect, 10.0, start, "the log", gw.log_tail)


def _cli(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True,
                          timeout=30, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    return f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def _views(run: Run, name: str, gw: LabGateway) -> None:
    """Every CLI view (text and JSON) and the raw control socket replies of one gateway."""
    sock = str(gw.socket)
    for command in ("status", "sas", "sessions"):
        run.artifacts[f"{name}: gateway {command}"] = _cli(command, "-s", sock)
        run.artifacts[f"{name}: gateway {command} --json"] = _cli(command, "--json", "-s", sock)
        run.artifacts[f"{name}: control {command}"] = json.dumps(request(sock, command))
    run.artifacts[f"{name}: control policy"] = json.dumps(request(sock, "policy"))
    config = str(gw.config_path)
    run.artifacts[f"{name}: gateway policy show --json"] = _cli("policy", "show", "--json", "-c", config,
                                                                "-s", sock)
    run.artifacts[f"{name}: gateway policy show"] = _cli("policy", "show", "-c", config, "-s", sock)
    run.artifacts[f"{name}: gateway policy explain"] = _cli("policy", "explain", "10.1.0.10", "10.2.0.10",
                                                            "icmp", "-c", config, "-s", sock)


def _metrics(run: Run, name: str, namespace: str) -> None:
    proc = subprocess.run(["ip", "netns", "exec", namespace, "curl", "-sS", "--max-time", "10",
                           "http://127.0.0.1:9436/metrics"], capture_output=True, text=True, timeout=20,
                          check=False)
    run.artifacts[f"{name}: /metrics"] = proc.stdout + proc.stderr


def _broken_configs(run: Run, hq_config: Path, workdir: Path) -> None:
    """check-config on copies of HQ's file (all its secrets inside) with errors next to them."""
    good = yaml.safe_load(hq_config.read_text())
    broken = yaml.safe_load(yaml.safe_dump(good))
    conns = broken["connections"]
    conns["manual1"]["manual"]["outbound"]["encryption_key"] = "0x" + MANUAL_KEYS["out_enc"].hex()[:-2]
    conns["manual1"]["manual"]["inbound"]["integrity_key"] = "0x" + MANUAL_KEYS["in_integ"].hex() + "zz"
    conns["branch1"]["auth"]["pre_shared_key"] = conns["branch1"]["auth"]["psk"]  # unknown key
    conns["dialin"]["l2tp"]["secret"] = [TUNNEL_SECRET]  # not a string
    broken["users"]["bob"]["password_hash"] = BOB_SALTED.replace("scrypt$", "scrypt$x$")
    broken["users"]["alice"]["nt_hash"] = nt_hash(PASSWORDS["alice"]).hex()[:-1]
    broken["users"]["carol"]["password"] = {"clear": PASSWORDS["carol"]}
    path = workdir / "broken.yaml"
    write_config(path, broken, "broken on purpose")
    run.artifacts["check-config (schema errors)"] = _cli("check-config", str(path))
    # cross-key errors (the schema passes): a key of the wrong length, a bad salted hash
    cross = yaml.safe_load(yaml.safe_dump(good))
    cross["connections"]["manual1"]["manual"]["outbound"]["encryption_key"] = \
        "0x" + MANUAL_KEYS["out_enc"].hex()[:-2]
    cross["users"]["bob"]["password_hash"] = BOB_SALTED.rsplit("$", 1)[0] + "$" + PASSWORDS["bob"] + "!"
    write_config(path, cross, "broken on purpose")
    run.artifacts["check-config (cross errors)"] = _cli("check-config", str(path))
    # a YAML syntax error right after a secret
    text = hq_config.read_text().replace(f"psk: {L2TP_PSK}", f'psk: "{L2TP_PSK}\n  [unclosed')
    path.write_text(text)
    run.artifacts["check-config (YAML error)"] = _cli("check-config", str(path))
    # the good file, and one others may read (warning) with a key others may read (error)
    run.artifacts["check-config (good)"] = _cli("check-config", str(hq_config))
    key = Path(good["connections"]["certs"]["auth"]["key"])
    write_config(path, good, "readable copy")
    path.chmod(0o644)
    key.chmod(0o644)
    try:
        run.artifacts["check-config (loose modes)"] = _cli("check-config", str(path))
    finally:
        key.chmod(0o600)


def _scenario(topo: Topology, workdir: Path) -> Iterator[Run]:
    secrets = Secrets()
    run = Run(secrets)
    home = HomeNetwork(topo, clients_wanted=2)
    home.up()
    one, two = home.clients
    certs = _certificates(workdir / "pki", topo)
    keydir = workdir / "keys"
    keydir.mkdir(mode=0o700)
    pair = _pair(topo, workdir, certs, keydir)
    for label, text in (("IKEv2 PSK", pair.psk), ("IKEv1 group PSK", L2TP_PSK),
                        ("wrong IKEv1 group PSK", WRONG_L2TP_PSK), ("L2TP tunnel secret", TUNNEL_SECRET),
                        ("wrong IKEv2 PSK", WRONG_IKEV2_PSK), ("bob's salted hash", BOB_SALTED)):
        secrets.add_text(label, text)
    for part in BOB_SALTED.split("$")[4:]:
        secrets.needles[part] = "bob's salted hash (salt or digest)"
    for user, password in PASSWORDS.items():
        secrets.add_password(f"{user}'s password", password)
    secrets.add_password("the wrong password", WRONG_PASSWORD)
    for name, key in MANUAL_KEYS.items():
        secrets.add_bytes(f"manual key {name}", key)
    secrets.add_private_key("HQ's private key", certs["hq_key"])
    secrets.add_private_key("the branch's private key", certs["br_key"])
    lacs: list[LabGateway] = []
    with pair:
        facts = run.facts
        pair.wait_tunnel()
        facts["cert_sa"] = wait_for(lambda: _ike_sa_up(pair, "branch", "hqcert"), bool, timeout=15)
        facts["ping"] = topo.ping(topo.branch.lan_ns, HQ_LAN_HOST, count=5, interval=0.1)
        topo.ping(topo.hq.lan_ns, "10.88.0.1", count=2, interval=0.1, wait=0.5)  # out on the manual SA
        hq, branch = pair.gateways["hq"], pair.gateways["branch"]

        # dial-in: a good LAC stays up; wrong password, other users and a wrong group key come and go
        alice = _lac(topo, one, workdir, "alice", "alice", PASSWORDS["alice"], "mschapv2")
        lacs.append(alice)
        _ppp_up(alice)
        facts["alice_ping"] = topo.ping(one.gw_ns, HQ_LAN_HOST, count=3, interval=0.1)
        with _lac(topo, two, workdir, "mallory", "alice", WRONG_PASSWORD, "mschapv2") as mallory:
            facts["wrong_password"] = bool(wait_for(lambda: "ppp.auth_failed" in mallory.log_text(), bool,
                                                    timeout=25))
            lacs.append(mallory)
        for user, method in (("bob", "pap"), ("carol", "chap-md5")):
            with _lac(topo, two, workdir, user, user, PASSWORDS[user], method) as gw:
                lacs.append(gw)
                _ppp_up(gw)
                facts[f"{user}_ping"] = topo.ping(two.gw_ns, HQ_LAN_HOST, count=2, interval=0.1)
        with _lac(topo, two, workdir, "wrongpsk", "bob", PASSWORDS["bob"], "pap", psk=WRONG_L2TP_PSK) as gw:
            lacs.append(gw)
            time.sleep(6.0)  # Main Mode retransmits, fails; no PPP
            facts["wrong_group_key_no_ppp"] = "ppp.up" not in gw.log_text()

        # a wrong IKEv2 PSK: the branch reloaded with one (HQ refuses it), then the right one again
        branch_config = yaml.safe_load(branch.config_path.read_text())
        wrong = yaml.safe_load(yaml.safe_dump(branch_config))
        wrong["connections"]["hq"]["auth"]["psk"] = WRONG_IKEV2_PSK
        start = len(hq.log_text())
        _reload(branch, wrong)
        facts["bad_psk"] = bool(wait_for(lambda: re.search(r"ike\.auth_failed .*reason=bad_psk",
                                                           hq.log_text()[start:]), bool, timeout=20))
        _reload(branch, branch_config)
        facts["psk_back"] = wait_for(lambda: _ike_sa_up(pair, "branch", "hq"), bool, timeout=20)

        # HQ reloads with a new user (and the reply of the control socket's reload)
        hq_config = yaml.safe_load(hq.config_path.read_text())
        hq_config["users"]["dave"] = {"password": PASSWORDS["dave"]}
        write_config(hq.config_path, hq_config, "lab gateway hq (reloaded)")
        run.artifacts["hq: control reload"] = json.dumps(request(str(hq.socket), "reload", timeout=30.0))
        run.artifacts["hq: gateway reload"] = _cli("reload", "-s", str(hq.socket))
        facts["reload"] = "config.user_added user=dave" in hq.log_text()

        for name, gw in (("hq", hq), ("branch", branch), ("alice", alice)):
            _views(run, name, gw)
        for name, site in (("hq", topo.hq), ("branch", topo.branch)):
            _metrics(run, name, site.gw_ns)
        _broken_configs(run, hq.config_path, workdir)
        facts["keys_saved"] = [line for line in (keydir / "esp_sa").read_text().splitlines() if line]
        for gw in lacs:
            gw.stop()
    for name in ("hq", "branch"):  # complete now: the gateways stopped
        run.artifacts[f"{name}: log"] = pair.log_path(name).read_text(errors="replace")
    for gw in lacs:
        run.artifacts[f"{gw.config_path.stem}: log"] = gw.log_text()
    # where the secrets are meant to be: the files the search must find them in
    run.facts["files"] = {"hq config": pair.config_path("hq").read_text(),
                          "branch config": pair.config_path("branch").read_text(),
                          "alice config": alice.config_path.read_text(),
                          "HQ key": certs["hq_key"].read_text(), "esp_sa": (keydir / "esp_sa").read_text()}
    if os.environ.get("SECRETS_TEST_DUMP"):  # for a human to read what was searched
        dump = Path(os.environ["SECRETS_TEST_DUMP"])
        dump.mkdir(parents=True, exist_ok=True)
        for name, text in run.artifacts.items():
            (dump / re.sub(r"[^A-Za-z0-9.-]+", "_", name)).write_text(text)
    for row in run.facts["keys_saved"]:  # the ESP keys IKE negotiated, as the branch saved them
        for i, value in enumerate(re.findall(r'"0x([0-9a-f]+)"', row)[1:]):
            secrets.add_bytes(f"a negotiated ESP key ({i})", bytes.fromhex(value))
    yield run


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("secrets")
    with lab(PREFIX) as topo:
        yield from _scenario(topo, workdir)
    assert_lab_gone(PREFIX)


# -- the tests --------------------------------------------------------------------------------


def test_the_scenario_did_what_it_says(scenario: Run) -> None:
    """So that a clean search below means something."""
    facts, artifacts = scenario.facts, scenario.artifacts
    assert facts["cert_sa"] and facts["ping"][1] >= 4, facts
    for key in ("alice_ping", "bob_ping", "carol_ping"):
        assert facts[key][1] >= 1, (key, facts[key])
    assert facts["wrong_password"] and facts["wrong_group_key_no_ppp"], facts
    assert facts["bad_psk"] and facts["psk_back"] and facts["reload"], facts
    assert len(facts["keys_saved"]) >= 4, facts["keys_saved"]  # both directions, two connections
    hq_log = artifacts["hq: log"]
    for line in ("DEBUG ", "ppp.up ", "WARNING ppp.auth_failed ", "sa.installed connection=manual1",
                 "ike.up connection=certs", "privileges.dropped", "config.reloaded"):
        assert line in hq_log, line
    assert "gateway_sa_packets" in artifacts["hq: /metrics"] and "gateway_ike" in artifacts["hq: /metrics"]
    assert "alice" in artifacts["hq: gateway sessions"]
    for name in ("schema errors", "cross errors", "YAML error", "loose modes"):
        assert artifacts[f"check-config ({name})"].startswith("exit 1"), artifacts[f"check-config ({name})"]
    schema = artifacts["check-config (schema errors)"]
    assert "connections.branch1.auth.pre_shared_key: unknown key" in schema, schema
    cross = artifacts["check-config (cross errors)"]
    assert "users.bob.password_hash: salted hash" in cross and "needs 32 octets" in cross, cross
    loose = artifacts["check-config (loose modes)"]
    assert "holds a private key but group or others may read it (mode 0644)" in loose, loose
    assert "warning: the config file holds secrets" in loose, loose
    assert len(scenario.secrets.needles) > 100


def test_no_secret_in_logs_cli_control_socket_metrics_or_errors(scenario: Run) -> None:
    leaks = {name: found for name, text in scenario.artifacts.items()
             if (found := scenario.secrets.found_in(text))}
    assert not leaks, f"secrets found (what, where): {leaks}"


def test_the_search_finds_what_it_looks_for(scenario: Run) -> None:
    """The needles are right: the files that hold the secrets are found to hold them."""
    files, secrets = scenario.facts["files"], scenario.secrets
    expected = {
        "hq config": {"IKEv2 PSK (text)", "IKEv1 group PSK (text)", "L2TP tunnel secret (text)",
                      "NT hash of alice's password (hex)", "bob's salted hash (text)",
                      "carol's password (text)", "manual key out_enc (0x)", "manual key in_integ (0x)"},
        "branch config": {"IKEv2 PSK (text)"},
        "alice config": {"alice's password (text)", "IKEv1 group PSK (text)", "L2TP tunnel secret (text)"},
        "HQ key": {"HQ's private key (PEM line 1)"},
        "esp_sa": {"a negotiated ESP key (0) (0x)", "a negotiated ESP key (1) (0x)"},
    }
    for name, kinds in expected.items():
        found = set(secrets.found_in(files[name]))
        assert kinds <= found, (name, kinds - found)
    probe = " ".join([L2TP_PSK.encode().hex().upper(), base64.b64encode(TUNNEL_SECRET.encode()).decode()])
    assert set(secrets.found_in(probe)) == {"IKEv1 group PSK (HEX)", "L2TP tunnel secret (base64)"}
