"""What the mesh may reach on a user's behalf: the one outbound URL policy.

- Model input URLs (`*_url` fields) are never fetched from the network: only `data:` URIs and
  this mesh's own signed blob-store URLs are accepted (`input_key`).
- Webhooks are POSTed only to addresses on the public internet. The host is resolved, and the
  request is refused when any address it resolves to is loopback, private, link-local (cloud
  metadata: 169.254.169.254, fd00:ec2::254), shared, unspecified, multicast or reserved (IPv6
  forms that embed an IPv4 address are judged by that address), unless the admin setting
  `GENMESH_OUTBOUND_ALLOW` (comma-separated CIDR networks and host names) allows it. The request
  then goes to the address that was checked (`pinned_request`), with the URL's Host header and
  TLS server name, so a second DNS answer cannot send it elsewhere; redirects are not followed.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from genmesh.errors import InvalidArgument

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
NOT_ALLOWED = "target not allowed"
# IPv6 prefixes that carry an IPv4 address in their low 32 bits (NAT64, RFC 6052 and 8215).
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


class TargetRefused(Exception):
    """The URL may not be reached. The message is for operators' logs, never for the submitter:
    what a host resolves to and which address was refused is exactly what a scanner wants."""


class TargetUnresolved(TargetRefused):
    """The host did not resolve (now): unlike a refusal, worth another try later."""


# How long a name may take to resolve before the attempt counts as failed.
RESOLVE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Target:
    """A checked URL and the address it will be sent to."""

    url: str
    scheme: str
    host: str
    port: int
    address: IPAddress


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, Teredo, NAT64), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in net for net in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    """Whether an address is on the public internet (is_global covers loopback, private,
    link-local, shared, unspecified and reserved ranges; multicast is refused besides)."""
    inner = embedded_ipv4(address)
    if inner is not None and not is_public(inner):
        return False
    return address.is_global and not address.is_multicast


@dataclass(frozen=True)
class OutboundPolicy:
    allow_networks: tuple[IPNetwork, ...] = ()
    allow_hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, allow: str) -> "OutboundPolicy":
        """From the admin setting: `127.0.0.1/32, 10.0.0.0/8, hooks.internal`."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for entry in (e.strip() for e in allow.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.replace("[", "").replace("]", ""), strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    def address_allowed(self, address: IPAddress) -> bool:
        if any(address.version == net.version and address in net for net in self.allow_networks):
            return True
        inner = embedded_ipv4(address)
        if inner is not None and any(inner in net for net in self.allow_networks if net.version == 4):
            return True
        return is_public(address)

    def check_syntax(self, url: str, field_name: str) -> tuple[str, str, int]:
        """(scheme, host, port) of an http(s) URL, or InvalidArgument naming the field. Refuses a
        literal address that is not allowed, as no resolution can change it."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise InvalidArgument("is not a valid URL", field=field_name) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgument("must be an http(s) URL with a host", field=field_name)
        if parts.username is not None or parts.password is not None:
            raise InvalidArgument("must not carry credentials", field=field_name)
        host = parts.hostname.lower().rstrip(".")
        literal = _literal(host)
        if literal is not None and not self.address_allowed(literal):
            raise InvalidArgument(f"{NOT_ALLOWED}: the mesh posts only to public addresses", field=field_name)
        return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)

    async def check_submitted(self, url: str, field_name: str) -> None:
        """At submit time: a malformed URL, a refused literal address or a host that does not
        resolve is InvalidArgument naming the field. A name that resolves to a refused address
        passes here and is refused (and recorded) at delivery, which resolves again anyway."""
        _, host, port = self.check_syntax(url, field_name)
        if _literal(host) is None and not await _resolves(host, port):
            raise InvalidArgument("its host does not resolve", field=field_name)

    async def resolve(self, url: str) -> Target:
        """The URL checked and pinned to one address; TargetRefused otherwise."""
        try:
            scheme, host, port = self.check_syntax(url, "url")
        except InvalidArgument as exc:
            raise TargetRefused(exc.message) from None
        literal = _literal(host)
        if literal is not None:
            return Target(url, scheme, host, port, literal)
        try:
            infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S)
        except (socket.gaierror, UnicodeError, asyncio.TimeoutError) as exc:
            raise TargetUnresolved(f"{host} does not resolve: {exc!r}") from None
        addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
        if not addresses:
            raise TargetUnresolved(f"{host} does not resolve")
        named = host in self.allow_hosts
        refused = [a for a in addresses if not (named or self.address_allowed(a))]
        if refused:
            # One refused address refuses the name: which one a connection would use is not ours.
            raise TargetRefused(f"{host} resolves to {refused[0]}, which is not allowed")
        return Target(url, scheme, host, port, addresses[0])


def pinned_request(target: Target) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(url, headers, extensions) for httpx that connect to the checked address while the
    server sees the URL's own Host and TLS server name (and its certificate is checked
    against that name)."""
    parts = urlsplit(target.url)
    ip = f"[{target.address}]" if target.address.version == 6 else str(target.address)
    netloc = f"{ip}:{target.port}"
    url = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    default_port = 443 if target.scheme == "https" else 80
    host_header = parts.netloc.rsplit("@", 1)[-1] if parts.port not in (None, default_port) else (
        f"[{target.host}]" if ":" in target.host else target.host)
    extensions: dict[str, Any] = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return url, {"host": host_header}, extensions


def input_key(url: str, store: Any) -> str | None:
    """The blob-store key behind an input URL when it is one this mesh issued (its signature
    holds), else None. Input URLs are never fetched from anywhere else."""
    return store.key_from_url(url)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


async def _resolves(host: str, port: int) -> bool:
    """False only when the name certainly does not resolve; a slow resolver gets the benefit of
    the doubt (delivery resolves again and records the outcome)."""
    try:
        return bool(await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S))
    except asyncio.TimeoutError:
        return True
    except (socket.gaierror, UnicodeError):
        return False
