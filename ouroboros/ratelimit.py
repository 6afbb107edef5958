"""The log-in rate limit: failed log-ins counted per username and per client address.

Counts live in the Django cache, which is Redis (settings.CACHES), so every web
process shares them. How it fits together:

1. Every failed `authenticate()` (the log-in page, the admin's, an API token
   endpoint, anything else) sends Django's `user_login_failed` signal; the
   receiver here adds one to the username's counter and to the address's.
   A counter lives for one window from its first failure (a fixed window).
2. `RateLimitedModelBackend` refuses to check a password while either counter
   is at its limit, so no caller of `authenticate()` can skip the limit.
3. The callers say why, clearly: the log-in forms (`RateLimitedAuthenticationForm`
   and the admin's) raise a form error, the log-in page answers 429; an API view
   wrapped in `login_rate_limited` answers 429 with JSON. Both set Retry-After.
4. A successful log-in clears its username's counter (not the address's: one
   valid account must not buy an attacker more guesses at others).

When Redis cannot be reached, the limit is not enforced (logged as an error)
rather than refusing every log-in: the app stays usable through a broker
outage, which the reliability promises require.

Refusing a username after N failures also lets anyone lock its owner out for a
window; the per-username limit is the trade-off every such limiter makes.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from functools import wraps

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.dispatch import receiver
from django.http import JsonResponse

log = logging.getLogger(__name__)

THROTTLED = "too_many_attempts"


@dataclass(frozen=True)
class Throttled:
    """Why a log-in is refused: which counter is full, and for how long at most."""

    scope: str  # "username" or "address"
    retry_after: int  # seconds, an upper bound (the whole window)

    @property
    def message(self) -> str:
        minutes = max(1, round(self.retry_after / 60))
        what = "this username" if self.scope == "username" else "your network address"
        return (f"Too many failed log-ins for {what}. Try again in {minutes} minute{'s' if minutes != 1 else ''}; "
                f"until then every attempt is refused, even with the right password.")


def _config() -> tuple[int, int, int]:
    conf = settings.OUROBOROS
    return conf["LOGIN_FAILURES_PER_USERNAME"], conf["LOGIN_FAILURES_PER_IP"], conf["LOGIN_FAILURE_WINDOW_SECONDS"]


def client_ip(request) -> str:
    """The client's address: REMOTE_ADDR, or the X-Forwarded-For entry our own proxies appended.

    With TRUSTED_PROXY_COUNT = n, the n-th address from the right is the one the
    outermost trusted proxy saw; entries left of it are the client's to forge.
    """
    if request is None:
        return ""
    proxies = settings.OUROBOROS["TRUSTED_PROXY_COUNT"]
    if proxies:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if len(forwarded) >= proxies:
            return forwarded[-proxies]
    return request.META.get("REMOTE_ADDR", "")


def _keys(*, username: str | None, ip: str) -> dict[str, str]:
    """Cache keys per scope; usernames are case-folded and hashed (any length or character is safe)."""
    keys = {}
    if username and username.strip():
        digest = hashlib.sha256(username.strip().casefold().encode("utf-8")).hexdigest()
        keys["username"] = f"login-failures:username:{digest}"
    if ip:
        keys["address"] = f"login-failures:address:{hashlib.sha256(ip.encode('utf-8')).hexdigest()}"
    return keys


def login_throttled(*, username: str | None, ip: str) -> Throttled | None:
    """The refusal for this username/address, or None when it may try to log in."""
    per_username, per_ip, window = _config()
    keys = _keys(username=username, ip=ip)
    try:
        counts = cache.get_many(list(keys.values()))
    except Exception:  # Redis down: see the module docstring
        log.exception("log-in rate limit not enforced: the cache cannot be read")
        return None
    limits = {"username": per_username, "address": per_ip}
    for scope, key in keys.items():
        if counts.get(key, 0) >= limits[scope]:
            return Throttled(scope=scope, retry_after=window)
    return None


def login_failure_record(*, username: str | None, ip: str) -> None:
    """Add one failure to the username's and the address's counters (atomic in Redis)."""
    _, _, window = _config()
    for key in _keys(username=username, ip=ip).values():
        try:
            if not cache.add(key, 1, timeout=window):
                try:
                    cache.incr(key)
                except ValueError:  # expired between add() and incr(): start a new window
                    cache.add(key, 1, timeout=window)
        except Exception:
            log.exception("log-in rate limit: could not count a failure")


def login_failures_clear(*, username: str | None = None, ip: str = "") -> None:
    """Forget the counters given (a successful log-in clears its username's; an admin may clear either)."""
    try:
        cache.delete_many(list(_keys(username=username, ip=ip).values()))
    except Exception:
        log.exception("log-in rate limit: could not clear a counter")


@receiver(user_login_failed, dispatch_uid="ouroboros.ratelimit.count_failure")
def _count_failure(sender, credentials, request=None, **kwargs):
    login_failure_record(username=credentials.get("username"), ip=client_ip(request))


@receiver(user_logged_in, dispatch_uid="ouroboros.ratelimit.clear_on_success")
def _clear_on_success(sender, request, user, **kwargs):
    login_failures_clear(username=user.get_username())


class RateLimitedModelBackend(ModelBackend):
    """Django's model backend, refusing to check any password while the limit holds."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            from django.contrib.auth import get_user_model

            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if login_throttled(username=username, ip=client_ip(request)):
            # Stops authenticate() at once; the caller sees a failed log-in.
            raise PermissionDenied("too many failed log-ins")
        return super().authenticate(request, username=username, password=password, **kwargs)


class _ThrottledFormMixin:
    """Check the limit before the password, so the form says why instead of "wrong password"."""

    def clean(self):
        throttled = login_throttled(username=self.data.get("username"), ip=client_ip(self.request))
        if throttled:
            self.throttled = throttled
            raise ValidationError(throttled.message, code=THROTTLED)
        return super().clean()


class RateLimitedAuthenticationForm(_ThrottledFormMixin, AuthenticationForm):
    throttled: Throttled | None = None


class RateLimitedAdminAuthenticationForm(_ThrottledFormMixin, AdminAuthenticationForm):
    throttled: Throttled | None = None


class RateLimitedLoginView(LoginView):
    """The log-in page; a refused attempt gets 429 with the form and the reason."""

    authentication_form = RateLimitedAuthenticationForm

    def form_invalid(self, form):
        response = super().form_invalid(form)
        if form.throttled:
            response.status_code = 429
            response["Retry-After"] = str(form.throttled.retry_after)
        return response


def _username_from(request, field: str) -> str | None:
    if request.content_type == "application/json":
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return None  # the view answers the malformed body itself
        value = body.get(field) if isinstance(body, dict) else None
        return value if isinstance(value, str) else None
    return request.POST.get(field)


def login_rate_limited(view=None, *, username_field: str = "username"):
    """Decorate a view that logs people in (e.g. an API token endpoint): 429 JSON while the limit holds.

        path("token/", login_rate_limited(obtain_auth_token), name="api-token")

    Failures are counted by the `user_login_failed` signal that `authenticate()`
    sends, so the view needs nothing else.
    """

    def decorator(view_func):
        @wraps(view_func)
        def wrapped(request, *args, **kwargs):
            if request.method == "POST":
                throttled = login_throttled(username=_username_from(request, username_field), ip=client_ip(request))
                if throttled:
                    # The API's error shape (curation.api.errors): status, code, detail, errors.
                    response = JsonResponse({"status": 429, "code": THROTTLED, "detail": throttled.message,
                                             "errors": []}, status=429)
                    response["Retry-After"] = str(throttled.retry_after)
                    return response
            return view_func(request, *args, **kwargs)

        return wrapped

    return decorator(view) if view is not None else decorator
