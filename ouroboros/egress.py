"""Where the server may send requests on a curator's say-so, and which secrets it may send (issue 14.1).

A curator names URLs (a lineage's backend, an external student, a webhook)
and the names of environment variables (API keys, webhook secrets). Unchecked,
that lets them point the workers at the cloud's metadata service or at
private hosts (SSRF) and have the server's own secrets sent there. Two rules,
both set by the operator in the environment:

1. Hosts: every URL's host must be on `OUROBOROS_BACKEND_ALLOWED_HOSTS`, a comma
   list of entries, each optionally pinned to a port:
   - `localhost`, `vllm.internal:8000`: a host name (exact, case-insensitive);
     `*.example.com` matches its subdomains, not the name itself;
   - `127.0.0.1`, `10.2.0.0/16`, `[::1]:8080`, `fd00::/8`: an address or a network.
   A host name is only a name: whatever it resolves to is checked again when a
   request is sent. Its addresses must be public, or inside an address entry
   of the list (so an allowed name that DNS moves to 10.x, 127.x or
   169.254.169.254 is refused). Link-local (169.254.0.0/16, fe80::/10; the
   metadata service lives there), unspecified (0.0.0.0, ::) and multicast
   addresses are refused whatever the list says. The default is loopback
   only, on any port: `localhost,127.0.0.0/8,::1`.
2. Secrets: a variable a setting names must start with
   `OUROBOROS_BACKEND_KEY_ENV_PREFIX` (default `OUROBOROS_BACKEND_KEY_`), so no
   setting can name DJANGO_SECRET_KEY, DATABASE_URL or AWS_SECRET_ACCESS_KEY.
   There is no fallback key: a setting that names no variable sends none.

The checks are pure functions of the URL, the addresses and the policy (unit
tested on plain values). `request()` applies them just before a request:
it resolves the host once, checks every address, and connects to a checked
address (TLS still verifies the certificate against the host name), so
nothing can re-resolve the name between the check and the connection.
Redirects are never followed.
"""
from __future__ import annotations

import http.client
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_ALLOWED_HOSTS = "localhost,127.0.0.0/8,::1"
DEFAULT_KEY_ENV_PREFIX = "OUROBOROS_BACKEND_KEY_"
HOSTS_SETTING = "OUROBOROS_BACKEND_ALLOWED_HOSTS"
PREFIX_SETTING = "OUROBOROS_BACKEND_KEY_ENV_PREFIX"
MAX_RESPONSE_BYTES = 16 * 1024 * 1024

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")
_ENV_NAME_TAIL = r"[A-Za-z0-9_]+"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]


class EgressRefused(ValueError):
    """A URL, an address or a variable name the operator's policy refuses; the message says which rule."""


@dataclass(frozen=True)
class HostRule:
    """One entry of the allowlist: a name (or `*.suffix`) or a network, and a port or None for any."""

    name: str | None = None
    network: IPNetwork | None = None
    port: int | None = None

    def __str__(self) -> str:
        if self.name is not None:
            host = self.name
        else:
            host = str(self.network.network_address) if self.network.prefixlen == self.network.max_prefixlen \
                else str(self.network)
            if self.port is not None and self.network.version == 6:
                host = f"[{host}]"
        return f"{host}:{self.port}" if self.port is not None else host

    def port_ok(self, port: int) -> bool:
        return self.port is None or self.port == port

    def name_matches(self, host: str) -> bool:
        if self.name is None:
            return False
        if self.name.startswith("*."):
            return host.endswith(self.name[1:]) and host != self.name[2:]
        return host == self.name


@dataclass(frozen=True)
class Policy:
    hosts: tuple[HostRule, ...]
    key_env_prefix: str

    @property
    def hosts_text(self) -> str:
        return ",".join(str(rule) for rule in self.hosts) or "(none)"


@dataclass(frozen=True)
class Target:
    """A checked URL, split into what a connection needs."""

    url: str
    scheme: str
    host: str  # lower case; an IPv6 literal without brackets
    port: int
    path: str  # path and query, at least "/"
    address: IPAddress | None  # the host as an address, when the URL names one


# Parsing the settings -------------------------------------------------------


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
    return int(text)


def parse_allowed_hosts(raw: str) -> tuple[HostRule, ...]:
    """The allowlist from its comma-separated text; ValueError naming the entry that is wrong."""
    rules = []
    for entry in (part.strip() for part in raw.split(",")):
        if not entry:
            continue
        port = None
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"{entry!r}: write an IPv6 entry as [address]:port")
                port = _port(rest[1:], entry)
        elif entry.count(":") == 1:
            host, port_text = entry.split(":")
            port = _port(port_text, entry)
        else:
            host = entry  # a name, an IPv4 address or network, or a bare IPv6 one
        try:
            network = ipaddress.ip_network(host, strict=False)
        except ValueError:
            name = host.lower().rstrip(".")
            if not _HOSTNAME.fullmatch(name):
                raise ValueError(f"{entry!r} is neither a host name nor an address or network") from None
            rules.append(HostRule(name=name, port=port))
        else:
            rules.append(HostRule(network=network, port=port))
    return tuple(rules)


def parse_key_env_prefix(raw: str) -> str:
    """The variable-name prefix; an empty one would let a setting name any variable, so it is refused."""
    prefix = raw.strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", prefix):
        raise ValueError(f"{prefix!r} must be a non-empty variable-name prefix (letters, digits, '_')")
    return prefix


def current_policy() -> Policy:
    """The policy in force: the parsed settings (read each call, so tests and reloads see changes)."""
    from django.conf import settings

    conf = settings.OUROBOROS
    return Policy(hosts=tuple(conf["BACKEND_ALLOWED_HOSTS"]), key_env_prefix=conf["BACKEND_KEY_ENV_PREFIX"])


# The checks ------------------------------------------------------------------


def _never_allowed(address: IPAddress) -> str | None:
    if address.is_link_local:
        return "a link-local address (the cloud metadata service lives there)"
    if address.is_unspecified:
        return "the unspecified address (it reaches this machine)"
    if address.is_multicast:
        return "a multicast address"
    return None


def normalise_address(text: str) -> IPAddress:
    """An address as the checks see it: scope id dropped, IPv4-mapped IPv6 as the IPv4 it is."""
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _in_networks(address: IPAddress, port: int, rules: Iterable[HostRule]) -> bool:
    return any(rule.network is not None and rule.port_ok(port) and address.version == rule.network.version
               and address in rule.network for rule in rules)


def url_check(url: str, *, policy: Policy) -> Target:
    """The URL split and checked against the host rules, without resolving anything; EgressRefused says why."""
    if not isinstance(url, str) or not url.strip():
        raise EgressRefused("is empty")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise EgressRefused(f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise EgressRefused(f"must be an http:// or https:// URL, not {parts.scheme or 'a relative one'}")
    if parts.username is not None or parts.password is not None:
        raise EgressRefused("must not carry a user name or password; name a key variable instead")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise EgressRefused("names no host")
    port = port or (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        address = normalise_address(host)
    except ValueError:
        address = None
    rule_text = f"{HOSTS_SETTING} allows {policy.hosts_text}"
    if address is not None:
        reason = _never_allowed(address)
        if reason:
            raise EgressRefused(f"host {address} is {reason}; it is never allowed")
        if not _in_networks(address, port, policy.hosts):
            raise EgressRefused(f"host {host} port {port} is not on the backend allowlist ({rule_text})")
    elif not any(rule.name_matches(host) and rule.port_ok(port) for rule in policy.hosts):
        raise EgressRefused(f"host {host} port {port} is not on the backend allowlist ({rule_text})")
    return Target(url=url.strip(), scheme=parts.scheme, host=host, port=port, path=path, address=address)


def addresses_check(target: Target, addresses: Iterable[str], *, policy: Policy) -> list[IPAddress]:
    """Every address the host resolved to, checked; EgressRefused names the first one refused.

    An address is allowed when an address entry covers it, or when the URL's
    host matched a name entry and the address is public. All must pass: a
    resolver that answers one good and one bad address is refused, since the
    connection could land on either.
    """
    checked = []
    for text in addresses:
        address = normalise_address(text)
        reason = _never_allowed(address)
        if reason:
            raise EgressRefused(f"host {target.host} resolves to {address}, {reason}; it is never allowed")
        if _in_networks(address, target.port, policy.hosts):
            checked.append(address)
            continue
        named = target.address is None and any(
            rule.name_matches(target.host) and rule.port_ok(target.port) for rule in policy.hosts)
        if named and address.is_global:
            checked.append(address)
            continue
        raise EgressRefused(f"host {target.host} resolves to {address}, a non-public address that no address "
                            f"entry of {HOSTS_SETTING} ({policy.hosts_text}) covers")
    if not checked:
        raise EgressRefused(f"host {target.host} resolves to no address")
    return checked


def key_env_check(name: str, *, policy: Policy) -> str:
    """The variable name, if the rule allows it ('' names none); EgressRefused otherwise."""
    name = (name or "").strip()
    if name and not re.fullmatch(re.escape(policy.key_env_prefix) + _ENV_NAME_TAIL, name):
        raise EgressRefused(f"{name} is not allowed: a key variable's name must start with "
                            f"{policy.key_env_prefix} ({PREFIX_SETTING}), e.g. {policy.key_env_prefix}VLLM")
    return name


URL_FIELDS = ("backend_base_url", "base_url", "webhook_url")
KEY_FIELDS = ("backend_api_key_env", "api_key_env", "webhook_secret_env")


def settings_problems(values: dict, *, policy: Policy | None = None) -> dict[str, str]:
    """For a dict of settings about to be saved: {field: the rule it breaks} for every URL and key field.

    An empty URL is fine here (it means "use the default"); every save path
    (API, admin, commands, model validation) calls this, so the rule is one.
    """
    policy = policy or current_policy()
    problems = {}
    for field, value in values.items():
        try:
            if field in URL_FIELDS and value:
                url_check(value, policy=policy)
            elif field in KEY_FIELDS:
                key_env_check(value, policy=policy)
        except EgressRefused as exc:
            problems[field] = str(exc)
    return problems


# Resolving and connecting ----------------------------------------------------


def system_resolver(host: str, port: int) -> list[str]:
    """Every address of the host, from the system's resolver (DNS, /etc/hosts)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


class HostsResolver:
    """A resolver from a hosts-file text ("10.0.0.5 models.example"): for tests, and no DNS at all."""

    def __init__(self, text: str):
        self.table: dict[str, list[str]] = {}
        for line in text.splitlines():
            fields = line.split("#", 1)[0].split()
            for name in fields[1:]:
                self.table.setdefault(name.lower(), []).append(fields[0])
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        try:
            return [str(normalise_address(host))]
        except ValueError:
            pass
        if host.lower() not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} is not in the hosts table")
        return list(self.table[host.lower()])


# The resolver the workers use. Tests replace it (monkeypatch) with a HostsResolver.
default_resolver: Resolver = system_resolver


def resolve(url: str, *, policy: Policy, resolver: Resolver | None = None) -> tuple[Target, list[IPAddress]]:
    """Check the URL, resolve its host once and check every address. OSError when it cannot be resolved."""
    target = url_check(url, policy=policy)
    if target.address is not None:
        return target, addresses_check(target, [str(target.address)], policy=policy)
    found = (resolver or default_resolver)(target.host, target.port)
    return target, addresses_check(target, found, policy=policy)


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def request(method: str, url: str, *, body: bytes | None = None, headers: dict[str, str] | None = None,
            timeout: float = 30.0, policy: Policy | None = None, resolver: Resolver | None = None) -> Response:
    """One HTTP request to a URL the policy allows, connected to the address that was checked.

    Raises EgressRefused (the policy), OSError (cannot connect, a timeout:
    TimeoutError) or http.client.HTTPException (a broken response). Any
    status comes back as a Response, redirects included: they are not followed.
    """
    target, addresses = resolve(url, policy=policy or current_policy(), resolver=resolver)
    last_error: OSError | None = None
    for address in addresses:
        connection_class = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
        # The connection keeps the URL's host (Host header, TLS SNI and certificate check) but its
        # socket goes to the checked address: there is no second look-up to race.
        connection = connection_class(target.host, target.port, timeout=timeout)
        connection._create_connection = (  # noqa: SLF001 - http.client's own seam for opening the socket
            lambda _address, conn_timeout, source, ip=str(address): socket.create_connection(
                (ip, target.port), conn_timeout, source))
        try:
            connection.request(method, target.path, body=body, headers=headers or {})
            response = connection.getresponse()
            data = response.read(MAX_RESPONSE_BYTES + 1)
            if len(data) > MAX_RESPONSE_BYTES:
                raise http.client.HTTPException(f"the response is larger than {MAX_RESPONSE_BYTES} bytes")
            return Response(status=response.status, headers={k.lower(): v for k, v in response.getheaders()},
                            body=data)
        except ConnectionRefusedError as exc:
            last_error = exc  # try the host's next checked address
        finally:
            connection.close()
    assert last_error is not None
    raise last_error


# Django validators and the save-time guard -------------------------------------


def validate_url(value: str) -> None:
    """A model/form validator: the URL is empty or allowed by the host rules."""
    from django.core.exceptions import ValidationError

    if value:
        try:
            url_check(value, policy=current_policy())
        except EgressRefused as exc:
            raise ValidationError(str(exc), code="egress") from None


def validate_key_env(value: str) -> None:
    """A model/form validator: the variable name is empty or follows the name rule."""
    from django.core.exceptions import ValidationError

    try:
        key_env_check(value, policy=current_policy())
    except EgressRefused as exc:
        raise ValidationError(str(exc), code="egress") from None


def instance_guard(instance, fields: Iterable[str]) -> None:
    """Refuse to save a row whose URL or key fields break the policy, whichever path saves it
    (a service, the admin, a management command, the shell). Raises a ValidationError keyed by field."""
    from django.core.exceptions import ValidationError

    values = {name: getattr(instance, name) for name in fields if hasattr(instance, name)}
    problems = settings_problems(values)
    if problems:
        raise ValidationError({field: [message] for field, message in problems.items()})
