"""Secrets and values derived from them (ICVs, MACs, AUTH payloads, hashes, responses,
cookies) are compared in constant time (`hmac.compare_digest`) everywhere in gateway/.

An AST walk finds every ``==`` / ``!=`` with an operand named like such a value (the last
word of the name it ends in: ``sa.rcookie``, ``nt_response``, ``expected``); lengths,
ALL-CAPS constants and None checks do not count.  What remains must be on the allow-list
below, each entry with the reason it is safe: a regression (a MAC compared with ``==``)
fails here.  A heuristic: names matter, so call computed MACs what they are.
"""

from __future__ import annotations

import ast
from pathlib import Path

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"

#: words (parts of an identifier split at "_") that name a secret or a value derived from one
SECRETISH = frozenset({
    "icv", "mac", "hmac", "digest", "hash", "response", "cookie", "psk", "secret", "password",
    "authenticator", "tag", "keymat", "skeyid", "expected", "signature", "proof",
})

#: (file under gateway/, the comparison as ast.unparse writes it): why it is not a secret
ALLOWED = {
    # IKEv1 cookies are the ISAKMP SA's public identifiers (RFC 2408 2.5.3), in clear
    # in every header: routing a datagram by them reveals nothing.
    ("ike/v1/endpoint.py", "cookie != bytes(8)"): "public header field",
    ("ike/v1/endpoint.py", "header.rcookie == bytes(8)"): "public header field",
    ("ike/v1/endpoint.py", "sa.icookie != header.icookie"): "public header field",
    ("ike/v1/endpoint.py", "sa.rcookie != header.rcookie"): "public header field",
    ("ike/v1/endpoint.py", "sa.rcookie != bytes(8)"): "public header field",
    ("ike/v1/isakmpsa.py", "msg.header.rcookie == bytes(8)"): "public header field",
    ("ike/v1/isakmpsa.py", "spi == self.icookie + self.rcookie"): "a DELETE's SPI: the cookies",
    # IKEv2 message IDs (RFC 7296 2.2): public sequence numbers in the header
    ("ike/v2/ikesa.py", "header.message_id != self.next_expected"): "message ID",
    ("ike/v2/ikesa.py", "header.message_id + 1 == self.next_expected"): "message ID",
    ("ike/v2/ikesa.py", "header.message_id == self.next_expected"): "message ID",
    ("ike/v2/ikesa.py", "self.cached_response[0] == header.message_id"): "message ID",
    # an AH header's length field against the length this SA's algorithm gives
    ("dataplane/ah.py", "length != expected"): "lengths, not ICVs",
    # a DER element's tag octet (identities and signatures are parsed, not compared)
    ("ike/identity.py", "tag != 48"): "DER tag",
    ("ike/identity.py", "tag & 31 == 31"): "DER tag",
    ("ike/identity.py", "set_tag != 49"): "DER tag",
    ("ike/identity.py", "seq_tag == 48"): "DER tag",
    ("ike/signatures.py", "tag != 48"): "DER tag",
    ("ike/signatures.py", "tag & 31 == 31"): "DER tag",
    ("ike/signatures.py", "inner_tag != 2"): "DER tag",
    ("config/yamlsource.py", "key_node.tag == 'tag:yaml.org,2002:merge'"): "YAML tag",
}


def _is_len(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "len"


def _secretish(node: ast.AST) -> bool:
    """Whether an operand is named like a secret: the last word of a name it ends in
    (``sa.rcookie``, ``nt_response``, ``self.expected[0]``, ``self._cookie(...)``) ends with
    one of SECRETISH; ALL-CAPS constants and ``thing_id`` / ``thing_size`` do not count."""
    for name in _terminals(node):
        if not name.isupper():
            last = name.rstrip("_").rsplit("_", 1)[-1].lower()
            if any(last.endswith(s) for s in SECRETISH):
                return True
    return False


def _terminals(node: ast.AST) -> list[str]:
    """The names whose values an expression compares (not the objects they hang from)."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return [node.attr]
    if isinstance(node, (ast.Subscript, ast.Starred)):
        return _terminals(node.value)
    if isinstance(node, ast.Call):
        return _terminals(node.func)
    if isinstance(node, ast.BinOp):
        return _terminals(node.left) + _terminals(node.right)
    if isinstance(node, ast.UnaryOp):
        return _terminals(node.operand)
    if isinstance(node, (ast.Tuple, ast.List)):
        return [name for elt in node.elts for name in _terminals(elt)]
    return []


def _flagged() -> set[tuple[str, str]]:
    found = set()
    for path in sorted(GATEWAY.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            operands = [node.left, *node.comparators]
            for op, left, right in zip(node.ops, operands, operands[1:], strict=False):
                if not isinstance(op, (ast.Eq, ast.NotEq)):
                    continue
                if any((isinstance(o, ast.Constant) and o.value is None) or _is_len(o)
                       or isinstance(o, ast.Compare) for o in (left, right)):
                    continue  # a None check, lengths, or two booleans
                if _secretish(left) or _secretish(right):
                    text = ast.unparse(ast.Compare(left, [op], [right]))
                    found.add((path.relative_to(GATEWAY).as_posix(), text))
    return found


def test_secret_values_are_compared_in_constant_time() -> None:
    unexplained = sorted(_flagged() - ALLOWED.keys())
    assert not unexplained, ("compare these with hmac.compare_digest (or allow-list them with a "
                             f"reason in {Path(__file__).name}): {unexplained}")


def test_the_allow_list_has_no_stale_entries() -> None:
    assert not sorted(ALLOWED.keys() - _flagged())


def test_the_walk_catches_a_plain_comparison() -> None:
    tree = ast.parse("if received_icv != expected: pass\nif len(icv) == 12: pass\nif m.tag == TAG: pass\n"
                     "if sa.rcookie == got: pass")
    compares = [n for n in ast.walk(tree) if isinstance(n, ast.Compare)]
    hits = [_secretish(c.left) or _secretish(c.comparators[0]) for c in compares]
    assert hits == [True, False, True, True]
