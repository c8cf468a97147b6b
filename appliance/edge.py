"""Render the edge filter (gateway.dataplane.edge.EdgePolicy) as nftables and apply it.

The ruleset lives in its own table, replaced atomically by ``nft -f``; it stays in
place when the gateway stops, so the edge fails closed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jinja2

from gateway.dataplane.edge import IKE_PORT, L2TP_PORT, NATT_PORT, EdgePolicy, ManagementRule

TABLE = "gateway_edge"
_TEMPLATES = Path(__file__).parent / "templates"


class EdgeError(RuntimeError):
    pass


def _match(rule: ManagementRule) -> str:
    if rule.protocol == "icmp":
        return "icmp type echo-request"
    if rule.port is None:
        return f"meta l4proto {rule.protocol}"
    return f"{rule.protocol} dport {rule.port}"


def render(policy: EdgePolicy, name: str = "gateway") -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    template = env.get_template("nftables-edge.nft.j2")
    return template.render(
        name=name, table=TABLE, public_interface=policy.public_interface,
        public_address=policy.public_address, ike_port=IKE_PORT, natt_port=NATT_PORT,
        l2tp_port=L2TP_PORT,
        management=[{"source": r.source, "match": _match(r)} for r in policy.management])


def available() -> bool:
    return shutil.which("nft") is not None


def apply(ruleset: str) -> None:
    proc = subprocess.run(["nft", "-f", "-"], input=ruleset, capture_output=True, text=True,
                          timeout=30)
    if proc.returncode != 0:
        raise EdgeError(f"nft -f failed: {proc.stderr.strip()}")


def counters() -> dict[str, dict[str, int]]:
    """The drop counters of the edge table (packets, bytes), empty if it is absent."""
    proc = subprocess.run(["nft", "-j", "list", "counters", "table", "inet", TABLE],
                          capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        return {}
    out: dict[str, dict[str, int]] = {}
    for item in json.loads(proc.stdout).get("nftables", []):
        c = item.get("counter")
        if c:
            out[c["name"]] = {"packets": int(c["packets"]), "bytes": int(c["bytes"])}
    return out
