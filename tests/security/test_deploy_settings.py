"""Production settings: `check --deploy` is clean, the default secret is refused, secrets come from the environment."""
from __future__ import annotations

import ast
import json
import os
import secrets
import string
import subprocess
import sys
from pathlib import Path

from django.conf import settings

ROOT = Path(settings.BASE_DIR)
SECRET_NAMES = ("SECRET", "PASSWORD", "TOKEN", "API_KEY", "PRIVATE")


def production_env(**overrides) -> dict:
    """This process's environment without any DJANGO_* of its own, plus the production variables."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")}
    alphabet = string.ascii_letters + string.digits + "!@#%^&*(-_=+)"
    env.update({"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "".join(secrets.choice(alphabet) for _ in range(50)),
                "DJANGO_ALLOWED_HOSTS": "example.org", "DJANGO_SETTINGS_MODULE": "ouroboros.settings"})
    env.update(overrides)
    return {key: value for key, value in env.items() if value is not None}


def run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def settings_in(env: dict, names: list[str]) -> dict:
    code = ("import json, django; from django.conf import settings as s; "
            f"print(json.dumps({{n: getattr(s, n, None) for n in {names!r}}}, default=str))")
    result = run(["-c", code], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_check_deploy_is_clean_with_the_three_production_variables():
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], production_env())
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues" in result.stdout, output
    assert "WARNING" not in output and "Warning" not in output, output


def test_production_turns_on_https_and_secure_cookies_and_make_run_does_not():
    names = ["DEBUG", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
             "SECURE_PROXY_SSL_HEADER"]
    production = settings_in(production_env(), names)
    assert production == {"DEBUG": False, "SECURE_SSL_REDIRECT": True, "SECURE_HSTS_SECONDS": 31_536_000,
                          "SESSION_COOKIE_SECURE": True, "CSRF_COOKIE_SECURE": True, "SECURE_PROXY_SSL_HEADER": None}
    behind_proxy = settings_in(production_env(DJANGO_SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https"), names)
    assert behind_proxy["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    development = settings_in(production_env(DJANGO_DEBUG=None, DJANGO_SECRET_KEY=None, DJANGO_ALLOWED_HOSTS=None),
                              names)
    assert development == {"DEBUG": True, "SECURE_SSL_REDIRECT": False, "SECURE_HSTS_SECONDS": 0,
                           "SESSION_COOKIE_SECURE": False, "CSRF_COOKIE_SECURE": False,
                           "SECURE_PROXY_SSL_HEADER": None}, "`make run` serves plain http on loopback"


def test_production_refuses_to_start_with_the_default_or_an_empty_secret_key():
    default_key = ast.literal_eval(next(
        node.value for node in ast.walk(ast.parse((ROOT / "ouroboros/settings.py").read_text()))
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_DEV_SECRET_KEY"
    ))
    for key in (None, default_key, ""):
        result = run(["manage.py", "check"], production_env(DJANGO_SECRET_KEY=key))
        assert result.returncode != 0, f"started with DJANGO_SECRET_KEY={key!r}"
        assert "ImproperlyConfigured" in result.stderr and "DJANGO_SECRET_KEY" in result.stderr, result.stderr


def test_a_bad_production_setting_fails_loudly_naming_its_variable():
    result = run(["manage.py", "check"], production_env(DJANGO_SECURE_HSTS_SECONDS="a year"))
    assert result.returncode != 0 and "DJANGO_SECURE_HSTS_SECONDS='a year' is not an integer" in result.stderr


def test_secrets_come_only_from_the_environment():
    env = production_env(DATABASE_URL="postgresql://app:s3cret%40pw@db.example.org:5432/ouroboros")
    seen = settings_in(env, ["SECRET_KEY", "DATABASES"])
    assert seen["SECRET_KEY"] == env["DJANGO_SECRET_KEY"]
    assert seen["DATABASES"]["default"]["PASSWORD"] == "s3cret@pw"
    # The settings module holds no secret of its own: every string assigned to a secret-like
    # name is read from the environment, except the development key that production refuses.
    tree = ast.parse((ROOT / "ouroboros/settings.py").read_text())
    literals = []
    for node in ast.walk(tree):
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign) else [])
        for target in targets:
            name = getattr(target, "id", "")
            if any(word in name.upper() for word in SECRET_NAMES) and isinstance(node.value, ast.Constant):
                literals.append(name)
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and isinstance(key.value, str) and isinstance(value, ast.Constant) \
                        and any(word in key.value.upper() for word in SECRET_NAMES) and value.value:
                    literals.append(key.value)
    assert literals == ["_DEV_SECRET_KEY"], f"secret-looking settings written in the code: {literals}"
