"""The egress policy on plain values: which URLs, addresses and variable names pass (ouroboros/egress.py).

No network: addresses come from a hosts table, never from DNS.
"""
from __future__ import annotations

import socket

import pytest

from ouroboros import egress
from ouroboros.egress import EgressRefused, HostsResolver, Policy, parse_allowed_hosts


def policy(hosts: str = egress.DEFAULT_ALLOWED_HOSTS, prefix: str = egress.DEFAULT_KEY_ENV_PREFIX) -> Policy:
    return Policy(hosts=parse_allowed_hosts(hosts), key_env_prefix=prefix)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/v1", "http://localhost:11434/v1", "http://[::1]:8000/v1", "http://127.9.9.9/v1",
    "https://LOCALHOST./v1",
])
def test_the_default_allows_loopback_on_any_port(url):
    egress.url_check(url, policy=policy())


@pytest.mark.parametrize("url,reason", [
    ("http://169.254.169.254/latest/v1", "link-local"),
    ("http://10.1.2.3:8000/v1", "not on the backend allowlist"),
    ("http://192.168.0.10/v1", "not on the backend allowlist"),
    ("http://vllm:8000/v1", "host vllm port 8000 is not on the backend allowlist"),
    ("http://0.0.0.0:8000/v1", "unspecified"),
    ("http://[::ffff:169.254.169.254]/v1", "link-local"),
    ("http://[fe80::1]/v1", "link-local"),
    ("ftp://127.0.0.1/v1", "http:// or https://"),
    ("http://user:pw@127.0.0.1/v1", "user name or password"),
    ("http:///v1", "names no host"),
    ("http://127.0.0.1:99999/v1", "not a valid URL"),
])
def test_the_default_refuses_everything_else(url, reason):
    with pytest.raises(EgressRefused, match=reason):
        egress.url_check(url, policy=policy())


def test_link_local_is_refused_even_when_an_entry_covers_it():
    with pytest.raises(EgressRefused, match="never allowed"):
        egress.url_check("http://169.254.169.254/", policy=policy("169.254.0.0/16,0.0.0.0/0"))


def test_entries_may_pin_a_port():
    rules = policy("vllm.internal:8000,10.2.0.0/16:9000,[fd00::5]:7000,*.models.example")
    egress.url_check("http://vllm.internal:8000/v1", policy=rules)
    egress.url_check("http://10.2.3.4:9000/v1", policy=rules)
    egress.url_check("http://[fd00::5]:7000/v1", policy=rules)
    egress.url_check("https://a.models.example/v1", policy=rules)
    for url in ("http://vllm.internal:8001/v1", "http://vllm.internal/v1", "http://10.2.3.4:9001/",
                "http://10.3.0.1:9000/", "http://[fd00::5]:7001/", "https://models.example/v1",
                "https://a.models.example.evil/v1"):
        with pytest.raises(EgressRefused, match="not on the backend allowlist"):
            egress.url_check(url, policy=rules)


@pytest.mark.parametrize("raw,message", [
    ("127.0.0.1:0", "port must be"), ("host:x", "port must be"), ("[::1]8080", r"as \[address\]:port"),
    ("bad_name!", "neither a host name"),
])
def test_a_bad_allowlist_entry_is_refused_by_name(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_allowed_hosts(raw)


def test_the_allowlist_reads_back_as_written():
    assert policy("localhost,127.0.0.0/8,::1,[::1]:80,h:1").hosts_text == "localhost,127.0.0.0/8,::1,[::1]:80,h:1"


# Addresses: what a name resolves to when the request is sent.

def _resolved(url: str, hosts_table: str, rules: Policy):
    return egress.resolve(url, policy=rules, resolver=HostsResolver(hosts_table))


def test_an_allowed_name_may_resolve_to_public_addresses():
    rules = policy("api.example.com")
    target, addresses = _resolved("https://api.example.com/v1", "93.184.216.34 api.example.com", rules)
    assert [str(a) for a in addresses] == ["93.184.216.34"] and target.host == "api.example.com"


@pytest.mark.parametrize("address,reason", [
    ("10.0.0.7", "non-public address"), ("127.0.0.1", "non-public address"), ("192.168.1.1", "non-public"),
    ("169.254.169.254", "link-local"), ("::ffff:10.0.0.7", "non-public"), ("0.0.0.0", "unspecified"),
])
def test_dns_cannot_move_an_allowed_name_to_a_private_address(address, reason):
    with pytest.raises(EgressRefused, match=reason):
        _resolved("https://api.example.com/v1", f"{address} api.example.com", policy("api.example.com"))


def test_a_private_address_passes_when_an_address_entry_covers_it():
    rules = policy("vllm:8000,172.18.0.0/16")
    _, addresses = _resolved("http://vllm:8000/v1", "172.18.0.5 vllm", rules)
    assert [str(a) for a in addresses] == ["172.18.0.5"]


def test_one_bad_address_among_good_ones_refuses_the_name():
    table = "93.184.216.34 api.example.com\n10.0.0.1 api.example.com"
    with pytest.raises(EgressRefused, match="10.0.0.1"):
        _resolved("https://api.example.com/v1", table, policy("api.example.com"))


def test_a_name_not_in_the_table_does_not_resolve():
    with pytest.raises(socket.gaierror):
        _resolved("http://localhost/v1", "", policy())


def test_an_address_literal_is_not_looked_up():
    resolver = HostsResolver("")
    egress.resolve("http://127.0.0.1:1/v1", policy=policy(), resolver=resolver)
    assert resolver.asked == []


# Variable names.

@pytest.mark.parametrize("name", ["DJANGO_SECRET_KEY", "OPENAI_API_KEY", "DATABASE_URL", "OUROBOROS_BACKEND_KEY_",
                                  "X_OUROBOROS_BACKEND_KEY_A", "OUROBOROS_BACKEND_KEY_A-B"])
def test_a_key_variable_outside_the_prefix_is_refused(name):
    with pytest.raises(EgressRefused, match="must start with OUROBOROS_BACKEND_KEY_"):
        egress.key_env_check(name, policy=policy())


def test_a_key_variable_inside_the_prefix_or_none_passes():
    assert egress.key_env_check("OUROBOROS_BACKEND_KEY_VLLM", policy=policy()) == "OUROBOROS_BACKEND_KEY_VLLM"
    assert egress.key_env_check("", policy=policy()) == ""
    assert egress.key_env_check("TEAM_KEY_A", policy=policy(prefix="TEAM_KEY_")) == "TEAM_KEY_A"


@pytest.mark.parametrize("raw", ["", "  ", "A B", "1X"])
def test_an_empty_or_malformed_prefix_is_refused(raw):
    with pytest.raises(ValueError, match="non-empty variable-name prefix"):
        egress.parse_key_env_prefix(raw)


def test_settings_problems_names_each_field():
    problems = egress.settings_problems({
        "backend_base_url": "http://169.254.169.254/latest/v1", "backend_api_key_env": "DJANGO_SECRET_KEY",
        "webhook_url": "http://10.1.2.3:8000/hook", "webhook_secret_env": "OUROBOROS_BACKEND_KEY_HOOK",
        "backend_model": "anything", "base_url": "",
    }, policy=policy())
    assert set(problems) == {"backend_base_url", "backend_api_key_env", "webhook_url"}
    assert "link-local" in problems["backend_base_url"]
