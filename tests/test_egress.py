"""The network policy: its entries and the decision for each connection. Pure, in memory."""

from __future__ import annotations

import pytest

from codebox import Sandbox
from codebox.local._egress import HOST, Policy, parse_entry, valid_name, within

PUBLIC = "203.0.113.80"  # what pypi.org resolves to on the development machine: public here


@pytest.mark.parametrize("text, kind, port", [
    ("index.example.org", "name", None),
    ("Index.Example.ORG.", "name", None),
    ("*.files.example.org", "wildcard", None),
    ("api.example.com:443", "name", 443),
    ("10.20.0.0/16", "ip", None),
    ("10.20.0.1:8080", "ip", 8080),
    ("2001:db8::/32", "ip", None),
    ("[2001:db8::1]:443", "ip", 443),
    ("[2001:db8::/48]:443", "ip", 443),
    ("::ffff:10.0.0.1", "ip", None),
    (HOST, "host", None),
    (f"{HOST}:8080", "host", 8080),
])
def test_valid_entries(text, kind, port):
    entry = parse_entry(text)
    assert (entry.kind, entry.port) == (kind, port)


@pytest.mark.parametrize("text, says", [
    ("", "not a host name"),
    ("exa mple.org", "not a host name"),
    ("*", "not a host name"),
    ("a.*.example.org", "not a host name"),
    ("http://example.org", "port must be"),
    ("example.org:0", "port must be"),
    ("example.org:70000", "port must be"),
    ("example.org:https", "port must be"),
    ("10.0.0.1/8", "host bits set"),
    ("999.1.1.1", "not a host name"),
    ("127.1", "not a host name"),
    ("2130706433", "not a host name"),
    ("[2001:db8::1", "brackets"),
    ("[example.org]:80", "brackets"),
    ("127.0.0.1", "loopback is never reachable"),
    ("127.0.0.0/8:80", "loopback is never reachable"),
    ("[::1]:80", "loopback is never reachable"),
    ("::ffff:127.0.0.1", "loopback is never reachable"),
    ("0.0.0.0", "loopback is never reachable"),
    ("localhost", "localhost is the box's own"),
    ("*.localhost", "localhost is the box's own"),
    ("bücher.example", "not a host name"),
])
def test_invalid_entries_raise_value_error(text, says):
    with pytest.raises(ValueError, match=says):
        parse_entry(text)


def test_the_sandbox_model_checks_entries_at_construction():
    assert Sandbox(network=["pypi.org", "*.github.com:443"]).network == [
        "pypi.org", "*.github.com:443"]
    with pytest.raises(ValueError, match="not a host name"):
        Sandbox(network=["pypi.org", "not a host"])
    with pytest.raises(ValueError):
        Sandbox(network="pypi.org")  # a list, or a bool


def test_names_digits_and_lengths():
    assert valid_name("a-b.example.org") and valid_name("_srv.example.org")
    assert not valid_name("-a.example.org") and not valid_name("a..b")
    assert not valid_name("a" * 64 + ".org") and not valid_name("0x7f.0.0.1")


def _final(policy: Policy, host: str, port: int, resolved=None):
    """The decision as the proxy reaches it (``resolved``: what the name resolves to)."""
    first = policy.decide(host, port)
    if not first.resolve:
        return first
    return policy.decide_resolved(host, port, resolved or [PUBLIC])


def test_false_allows_nothing():
    policy = Policy(False)
    assert not policy.enabled
    for host in ("pypi.org", PUBLIC, HOST, "10.0.0.1"):
        assert not _final(policy, host, 443).allowed


def test_true_allows_public_addresses_and_names_that_resolve_to_them():
    policy = Policy(True)
    assert _final(policy, PUBLIC, 443).allowed
    assert _final(policy, "[2606:4700::1111]", 443).allowed
    decision = _final(policy, "pypi.org", 443, [PUBLIC, PUBLIC, "2606:4700::1"])
    assert decision.allowed and decision.addresses == (PUBLIC, "2606:4700::1")


@pytest.mark.parametrize("host", [
    "127.0.0.1", "127.0.0.53", "[::1]", "::ffff:127.0.0.1", "0.0.0.0", "::",
    "::ffff:7f00:1", "64:ff9b::7f00:1", "2002:7f00:1::", "localhost", "LOCALHOST.",
    "a.localhost", "169.254.169.254", "fe80::1", "10.0.0.1", "172.16.5.4", "192.168.1.1",
    "100.64.0.1", "fd00::1", "224.0.0.1", "ff02::1", "255.255.255.255",
    "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", HOST,
])
def test_true_refuses_the_host_and_every_special_address(host):
    decision = _final(Policy(True), host, 80)
    assert not decision.allowed and not decision.addresses, decision


@pytest.mark.parametrize("resolved", [
    ["127.0.0.1"], ["::1"], [PUBLIC, "10.0.0.7"], ["169.254.169.254"], ["0.0.0.0"],
    ["::ffff:192.168.0.1"], [],
])
def test_a_name_is_refused_when_any_address_it_resolves_to_is(resolved):
    for policy in (Policy(True), Policy(["rebind.example"])):
        decision = policy.decide_resolved("rebind.example", 443, resolved)
        assert not decision.allowed, decision


def test_a_list_allows_what_it_names_and_nothing_else():
    policy = Policy(["index.example.org", "*.files.example.org", "api.example.com:443",
                     "10.20.0.0/16", "[2001:db8::1]:8443", f"{HOST}:8080"])
    assert policy.decide("index.example.org", 80).resolve
    assert policy.decide("Index.Example.Org.", 8443).resolve
    assert policy.decide("a.b.files.example.org", 443).resolve
    assert not policy.decide("files.example.org", 443).resolve  # subdomains only
    assert not policy.decide("evilfiles.example.org", 443).resolve
    assert policy.decide("api.example.com", 443).resolve
    assert not policy.decide("api.example.com", 80).resolve
    assert not policy.decide("other.example", 443).resolve
    # Named by CIDR: private addresses too, names resolving into them as well.
    assert _final(policy, "10.20.3.4", 5432).allowed
    assert not _final(policy, "10.21.0.1", 5432).allowed
    assert _final(policy, "index.example.org", 443, ["10.20.0.9"]).allowed
    assert not _final(policy, "index.example.org", 443, ["10.30.0.9"]).allowed
    assert _final(policy, "2001:db8::1", 8443).allowed
    assert not _final(policy, "2001:db8::1", 443).allowed
    # Public addresses only when listed (this is not network=True).
    assert not _final(policy, PUBLIC, 443).allowed
    # The host: only as host.codebox.internal, on the listed port, and to its loopback.
    host = policy.decide(HOST, 8080)
    assert host.allowed and host.addresses == ("127.0.0.1",)
    assert not policy.decide(HOST, 8081).allowed
    assert not policy.decide("HOST.CODEBOX.INTERNAL.", 22).allowed


def test_a_cidr_never_reaches_the_hosts_loopback():
    policy = Policy(["0.0.0.0/0", "::/0"])
    assert _final(policy, "10.1.2.3", 80).allowed and _final(policy, PUBLIC, 80).allowed
    for host in ("127.0.0.1", "0.0.0.0", "::1", "::ffff:127.0.0.1", "::"):
        assert not _final(policy, host, 80).allowed, host


def test_refusals_say_why():
    assert "never reachable by address" in _final(Policy(True), "127.0.0.1", 80).reason
    assert "link-local" in _final(Policy(True), "169.254.169.254", 80).reason
    assert "by IP or CIDR" in _final(Policy(True), "10.0.0.1", 80).reason
    assert "not listed" in _final(Policy(["a.example"]), "b.example", 80).reason
    assert "resolves to 10.0.0.1" in Policy(True).decide_resolved("x.example", 80,
                                                                  ["10.0.0.1"]).reason
    assert Policy(["a.example"]).describe() == "network=[a.example]"


def test_bad_targets_are_refused():
    for host in ("", "a b", "127.1", "0x7f000001", "exa_mple..org", "fe80::1%eth0"):
        assert not _final(Policy(True), host, 80).allowed, host
    assert not Policy(True).decide("example.org", 0).resolve
    assert not Policy(True).decide("example.org", 70000).resolve


def test_a_policy_within_another():
    assert within(False, False) and within(False, True) and within(["a.example"], True)
    assert within(["a.example:443"], ["a.example"]) and not within(["a.example"], ["a.example:443"])
    assert within(["x.a.example"], ["*.a.example"]) and not within(["a.example"], ["*.a.example"])
    assert within(["10.1.0.0/16"], ["10.0.0.0/8"]) and not within(["10.0.0.0/8"], True)
    assert within(["8.8.8.0/24"], True) and not within(True, ["a.example"])
    assert not within([HOST], True) and within([f"{HOST}:80"], [HOST])
    assert not within(["a.example"], False)
