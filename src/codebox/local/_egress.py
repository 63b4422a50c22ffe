"""A box's network policy, and the decision for each connection it asks its proxy for.

Standard library only, and no I/O: the sandbox provisioner imports it inside the Kernel
Gateway, and the proxy (`_proxy`) asks it before and after resolving a name.

A policy is ``False`` (no egress), ``True`` (public addresses) or a list of entries: a host
name (``*.`` matches subdomains), an IP address or CIDR, each with an optional ``:port``
(IPv6 with a port in brackets), or ``host.codebox.internal[:port]`` for the host itself.

The rules, whatever the policy says:
- the host's loopback (and ``0.0.0.0``/``::``, which reach it too) is never reachable by
  address: only as ``host.codebox.internal``, when an entry names it;
- link-local (cloud metadata), private (RFC 1918, CGNAT, IPv6 ULA), multicast and broadcast
  addresses are reachable only when an entry names them by IP or CIDR;
- a name is checked first against the entries, then every address it resolves to is checked
  as above: one refused address refuses the name (no DNS rebinding), and the proxy connects
  to the checked addresses, never to the name again.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

HOST = "host.codebox.internal"
"""The name under which a box reaches the host, when an entry names it."""
HOST_ADDRESS = "127.0.0.1"
"""Where ``host.codebox.internal`` leads: the host's loopback."""

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Never reachable by address. Connecting to 0.0.0.0 or :: reaches the host's own services.
_NEVER = tuple(ipaddress.ip_network(n) for n in ("127.0.0.0/8", "::1/128", "0.0.0.0/8",
                                                  "::/128"))
# Reachable only when an entry names them by IP or CIDR, with what a refusal calls them.
_SPECIAL: tuple[tuple[Network, str], ...] = tuple(
    (ipaddress.ip_network(net), kind) for net, kind in (
        ("169.254.0.0/16", "link-local"), ("fe80::/10", "link-local"),
        ("10.0.0.0/8", "private"), ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"), ("100.64.0.0/10", "shared (CGNAT)"),
        ("fc00::/7", "unique local"), ("224.0.0.0/4", "multicast"),
        ("ff00::/8", "multicast"), ("255.255.255.255/32", "broadcast"),
    ))
# IPv6 ranges that carry an IPv4 address a router may deliver to: checked as that address.
_EMBEDDING = tuple(ipaddress.ip_network(n) for n in ("64:ff9b::/96", "::/96"))
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")


@dataclass(frozen=True)
class Entry:
    """One parsed policy entry."""

    text: str
    kind: str  # "host" (host.codebox.internal), "name", "wildcard" or "ip"
    name: str = ""  # a name's, or a wildcard's suffix without "*."
    network: Network | None = None
    port: int | None = None  # None: every port

    def allows_port(self, port: int) -> bool:
        return self.port is None or self.port == port

    def covers(self, other: Entry) -> bool:
        """Whether everything ``other`` allows, this allows too."""
        if self.port is not None and self.port != other.port:
            return False
        if self.kind == "ip" and other.kind == "ip":
            assert self.network is not None and other.network is not None
            return (self.network.version == other.network.version
                    and other.network.subnet_of(self.network))  # type: ignore[arg-type]
        if self.kind == "wildcard" and other.kind in ("name", "wildcard"):
            return other.name.endswith("." + self.name)
        return self.kind == other.kind and self.name == other.name


@dataclass(frozen=True)
class Decision:
    """What the proxy may do with one connection. ``resolve``: the name passed the entries;
    resolve it and ask again with its addresses (`Policy.decide_resolved`)."""

    allowed: bool
    reason: str
    addresses: tuple[str, ...] = ()
    resolve: bool = False


def parse_entry(text: str) -> Entry:
    """One policy entry, checked.

    Raises:
        ValueError: It is not a host name, wildcard, IP address or CIDR with an optional
            port, or it names what no policy can reach (the host's loopback by IP).
    """
    if not isinstance(text, str):
        raise ValueError(f"a network entry must be a string, not {type(text).__name__}")
    given = text.strip()
    host, port = _split_port(given.lower(), given)
    if host == HOST:
        return Entry(given, "host", port=port)
    network = _network(host, given)
    if network is not None:
        if any(network.subnet_of(n) for n in _NEVER  # type: ignore[arg-type]
               if n.version == network.version):
            raise ValueError(f"network entry {given!r}: the host's loopback is never "
                             f"reachable by IP; name {HOST}[:port] to reach the host")
        return Entry(given, "ip", network=network, port=port)
    if host.startswith("*."):
        name, kind = host[2:], "wildcard"
    else:
        name, kind = host, "name"
    if not valid_name(name):
        raise ValueError(f"network entry {given!r} is not a host name, *.name, IP address "
                         "or CIDR (with an optional :port)")
    name = name.rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        raise ValueError(f"network entry {given!r}: localhost is the box's own loopback; "
                         f"name {HOST}[:port] to reach the host")
    return Entry(given, kind, name=name, port=port)


def _split_port(lower: str, given: str) -> tuple[str, int | None]:
    if lower.startswith("["):
        end = lower.find("]")
        host, rest = lower[1:end], lower[end + 1:]
        if end < 0 or ":" not in host or (rest and not rest.startswith(":")):
            raise ValueError(f"network entry {given!r}: brackets hold an IPv6 address")
        return host, _port(rest[1:], given) if rest else None
    if lower.count(":") == 1:
        host, port = lower.split(":")
        return host, _port(port, given)
    return lower, None  # no port, or a bare IPv6 address or network


def _port(text: str, given: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"network entry {given!r}: the port must be 1-65535")
    return int(text)


def _network(host: str, given: str) -> Network | None:
    """The entry as a network, None if it is no address; a `ValueError` for a bad one."""
    try:
        network = ipaddress.ip_network(host, strict=True)
    except ValueError as exc:
        if "/" in host or ":" in host:
            raise ValueError(f"network entry {given!r}: {exc}") from None
        return None  # a name (or nothing valid: the name check says so)
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None
        return ipaddress.IPv4Network((int(mapped), max(0, network.prefixlen - 96)))
    return network


def valid_name(name: str) -> bool:
    """Whether ``name`` (lower case) is a DNS host name. What a resolver reads as an IPv4
    address (``127.1``, ``0x7f000001``, ``2130706433``) is not, nor a last label of digits."""
    name = name[:-1] if name.endswith(".") else name
    if not name or len(name) > 253:
        return False
    try:
        socket.inet_aton(name)
        return False
    except OSError:
        pass
    labels = name.split(".")
    return all(_LABEL.match(label) for label in labels) and not labels[-1].isdigit()


def address(text: str) -> Address | None:
    """``text`` as an IP address (brackets, a v4-mapped IPv6 form resolved), else None."""
    try:
        ip = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def classify(ip: Address) -> str | None:
    """What kind of refused-by-default address ``ip`` is: ``"loopback"`` (never reachable),
    a special kind (reachable when named by IP), or None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded(ip)
        if embedded is not None:
            kind = classify(embedded)
            if kind is not None:
                return kind
    for net in _NEVER:
        if ip.version == net.version and ip in net:
            return "loopback"
    for net, kind in _SPECIAL:
        if ip.version == net.version and ip in net:
            return kind
    return None


def _embedded(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip in _SIX_TO_FOUR:
        return ip.sixtofour
    for net in _EMBEDDING:
        if ip in net and int(ip) & 0xFFFFFFFF:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


class Policy:
    """A box's network policy: ``False``, ``True`` or a list of entries.

    Raises:
        ValueError: An entry is invalid (see `parse_entry`), or the value is none of those.
    """

    def __init__(self, network: bool | Sequence[str] | None) -> None:
        self.public = network is True
        if network is None or isinstance(network, bool):
            entries: tuple[Entry, ...] = ()
        elif isinstance(network, (list, tuple)):
            entries = tuple(parse_entry(e) for e in network)
        else:
            raise ValueError("network must be true, false or a list of entries, not "
                             f"{type(network).__name__}")
        self.entries = entries
        self.value: bool | list[str] = (bool(network) if isinstance(network, bool) or
                                        network is None else [e.text for e in entries])

    @property
    def enabled(self) -> bool:
        """Whether anything at all may be reached."""
        return self.public or bool(self.entries)

    def describe(self) -> str:
        if self.public:
            return "network=True: public addresses only"
        if not self.entries:
            return "network=False: no network"
        return "network=[" + ", ".join(e.text for e in self.entries) + "]"

    def decide(self, host: str, port: int) -> Decision:
        """The decision for ``host:port`` before any resolution."""
        target = host.strip("[]").lower()
        target = target[:-1] if target.endswith(".") else target
        if not 0 < port < 65536:
            return Decision(False, f"port {port} is not a port")
        if target == HOST:
            if any(e.kind == "host" and e.allows_port(port) for e in self.entries):
                return Decision(True, f"{HOST}:{port} is listed", (HOST_ADDRESS,))
            return Decision(False, f"{HOST}:{port} is not listed (an entry {HOST}:{port} "
                                   "would allow it)")
        ip = address(target)
        if ip is not None:
            return self._check(ip, port, named=False)
        if not valid_name(target):
            return Decision(False, f"{host!r} is not a host name or IP address")
        if target == "localhost" or target.endswith(".localhost"):
            return Decision(False, "localhost is the box's own loopback (reached directly, "
                                   f"not through the proxy); the host is {HOST}")
        if self.public:
            return Decision(False, "network=True allows public addresses", resolve=True)
        for entry in self.entries:
            if entry.kind == "name" and entry.name == target and entry.allows_port(port):
                return Decision(False, f"{entry.text!r} is listed", resolve=True)
            if (entry.kind == "wildcard" and target.endswith("." + entry.name)
                    and entry.allows_port(port)):
                return Decision(False, f"{entry.text!r} is listed", resolve=True)
        return Decision(False, f"{target}:{port} is not listed")

    def decide_resolved(self, host: str, port: int, addresses: Iterable[str]) -> Decision:
        """The decision for a name that passed `decide`, given every address it resolves
        to: allowed only if every one of them is."""
        checked: list[str] = []
        for text in addresses:
            ip = address(text)
            if ip is None:
                return Decision(False, f"{host} resolves to {text!r}, not an address")
            decision = self._check(ip, port, named=True)
            if not decision.allowed:
                return Decision(False, f"{host} resolves to {decision.reason}")
            if str(ip) not in checked:
                checked.append(str(ip))
        if not checked:
            return Decision(False, f"{host} does not resolve")
        return Decision(True, f"{host} resolves to public or listed addresses", tuple(checked))

    def _check(self, ip: Address, port: int, *, named: bool) -> Decision:
        """An address: ``named`` if it is what a listed (or, with ``True``, any) name
        resolved to."""
        kind = classify(ip)
        if kind == "loopback":
            return Decision(False, f"{ip}, the host's loopback: never reachable by address "
                                   f"(an entry {HOST}:PORT reaches the host)")
        for entry in self.entries:
            if (entry.kind == "ip" and entry.network is not None
                    and entry.network.version == ip.version and ip in entry.network
                    and entry.allows_port(port)):
                return Decision(True, f"{ip} is in {entry.text!r}", (str(ip),))
        if kind is not None:
            return Decision(False, f"{ip}, a {kind} address: reachable only when an entry "
                                   "names it by IP or CIDR")
        if named or self.public:
            return Decision(True, f"{ip} is public", (str(ip),))
        return Decision(False, f"{ip}:{port} is not listed")


def within(requested: bool | Sequence[str] | None, ceiling: bool | Sequence[str] | None) -> bool:
    """Whether the policy ``requested`` allows nothing that ``ceiling`` does not."""
    wanted, limit = Policy(requested), Policy(ceiling)
    if not wanted.enabled:
        return True
    if wanted.public:
        return limit.public
    for entry in wanted.entries:
        if limit.public and (entry.kind in ("name", "wildcard") or (
                entry.kind == "ip" and not _touches_special(entry))):
            continue
        if not any(mine.covers(entry) for mine in limit.entries):
            return False
    return True


def _touches_special(entry: Entry) -> bool:
    net = entry.network
    assert net is not None
    return any(net.version == other.version and net.overlaps(other)
               for other in (*_NEVER, *(n for n, _ in _SPECIAL), *_EMBEDDING, _SIX_TO_FOUR))
