"""Settings for the web server that bench/load.py starts: the app's own, in production mode, plus one
trivial page behind the same login (the baseline).

The server listens on plain HTTP on loopback, so the cookies cannot be marked
Secure (a client would then never send them back) and nothing may redirect to
HTTPS; everything else is what `DJANGO_DEBUG=0` gives a deployment.
"""
import warnings

from ouroboros.settings import *  # noqa: F401,F403 -- the app's settings, unchanged but for the lines below

# The bench serves no static file, so it does not run collectstatic; whitenoise would warn on every start.
warnings.filterwarnings("ignore", message="No directory at", module="whitenoise.base")

ROOT_URLCONF = "bench.load_urls"
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
SECURE_SSL_REDIRECT = False
SECURE_HSTS_SECONDS = 0
