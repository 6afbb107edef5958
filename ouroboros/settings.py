"""Django settings for Ouroboros.

Every value that differs between machines comes from the environment (see
`ouroboros.env`); the defaults let a new user run `make run` with nothing set.
"""
from __future__ import annotations

import re
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

from . import egress
from .env import envbool, envfloat, envint, envlist, envstr, parse_database_url

BASE_DIR = Path(__file__).resolve().parent.parent

_DEV_SECRET_KEY = "dev-only-insecure-key-set-DJANGO_SECRET_KEY-in-production"
DEBUG = envbool("DJANGO_DEBUG", True)
SECRET_KEY = envstr("DJANGO_SECRET_KEY", _DEV_SECRET_KEY)
if not DEBUG and SECRET_KEY in ("", _DEV_SECRET_KEY):
    raise ImproperlyConfigured("DJANGO_DEBUG=0 needs DJANGO_SECRET_KEY set to a secret value (not empty, not the "
                               "development default)")
ALLOWED_HOSTS = envlist("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "django_celery_beat",
    "curation",
    "generation",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "ouroboros.urls"
WSGI_APPLICATION = "ouroboros.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "ouroboros.roles.roles_context",
            ],
        },
    },
]

# The database: embedded PostgreSQL by default (`make run` / `make test` export
# DATABASE_URL for it); any PostgreSQL with pgvector when DATABASE_URL names one.
DATABASES = {
    "default": {
        # Outside `make`, the default is the embedded server that `make run` starts.
        **parse_database_url(envstr("DATABASE_URL", f"postgresql://postgres@/ouroboros?host={BASE_DIR / '.data/run/postgres'}&port=5432")),
        "CONN_MAX_AGE": envint("DJANGO_CONN_MAX_AGE", 0, minimum=0),
        "CONN_HEALTH_CHECKS": True,
        "TEST": {"NAME": envstr("DJANGO_TEST_DATABASE_NAME", "test_ouroboros")},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
# The model backend behind the log-in rate limit (ouroboros.ratelimit): every
# caller of authenticate() (the log-in page, the admin, an API token endpoint)
# is refused while the username or the client's address has too many failures.
AUTHENTICATION_BACKENDS = ["ouroboros.ratelimit.RateLimitedModelBackend"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Request bodies are bounded before a view sees them: a larger body, too many
# fields or too many files get a 400 naming the limit (ouroboros.views.bad_request).
# Uploaded files above FILE_UPLOAD_MAX_MEMORY_SIZE are streamed to a temporary
# file outside the code, templates and static folders (a system check holds it),
# and stored files are never executable.
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("DJANGO_DATA_UPLOAD_MAX_MEMORY_SIZE", 2 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_NUMBER_FIELDS = envint("DJANGO_DATA_UPLOAD_MAX_NUMBER_FIELDS", 1000, minimum=10)
DATA_UPLOAD_MAX_NUMBER_FILES = envint("DJANGO_DATA_UPLOAD_MAX_NUMBER_FILES", 10, minimum=1)
FILE_UPLOAD_MAX_MEMORY_SIZE = envint("DJANGO_FILE_UPLOAD_MAX_MEMORY_SIZE", 2 * 1024 * 1024, minimum=0)
FILE_UPLOAD_TEMP_DIR = envstr("DJANGO_FILE_UPLOAD_TEMP_DIR", "") or None  # None: the system's temp folder
FILE_UPLOAD_PERMISSIONS = 0o640
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o750

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
MEDIA_ROOT = Path(envstr("OUROBOROS_MEDIA_ROOT", str(BASE_DIR / "media")))
EXPORT_ROOT = MEDIA_ROOT / "exports"

# The API: session auth for the browser, token auth for scripts; the same role
# checks as the pages. The schema is drf-spectacular's, its UIs served locally.
# Token auth comes first: its WWW-Authenticate header makes an anonymous request
# a 401 (with session auth first DRF would answer 403). Every error is JSON in
# one shape (curation.api.errors).
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "EXCEPTION_HANDLER": "curation.api.errors.exception_handler",
    "DEFAULT_PAGINATION_CLASS": None,
    # JSON bodies only (a view that takes a file names its own parsers), so the schema
    # describes exactly one request encoding.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Ouroboros API",
    "DESCRIPTION": "Curate synthetic training data: lineages, jobs, samples, reviews and training sets.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its UIs describe every endpoint: for signed-in users only.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a `status`; each gets an enum named after its model.
    "ENUM_NAME_OVERRIDES": {
        "GenerationStatusEnum": "curation.models.Generation.Status",
        "SampleStatusEnum": "curation.models.Sample.Status",
        "TrainingSetStatusEnum": "curation.models.TrainingSet.Status",
        "ExportStatusEnum": "curation.models.TrainingSetExport.Status",
        "JobStatusEnum": "generation.models.GenerationJob.Status",
        "ModelRecordStatusEnum": "generation.models.ModelRecord.Status",
        "ModelRecordKindEnum": "generation.models.ModelRecord.Kind",
        "FlagKindEnum": "curation.models.Flag.Kind",
    },
}

# Celery: a queue per kind of work. `generation` is slow (an LLM), `curation`
# is embedding and flagging; tasks are acknowledged after they finish so that
# a worker that dies mid-task hands its task to another (every task is safe to
# run twice, see STYLE.md §4).
CELERY_BROKER_URL = envstr("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "curation"
# Each queue has its own exchange and routing key, so that a worker started
# with `-Q generation` on a GPU box receives generation work and nothing else.
CELERY_TASK_QUEUES = (
    Queue("generation", Exchange("generation", type="direct"), routing_key="generation"),
    Queue("curation", Exchange("curation", type="direct"), routing_key="curation"),
    # The built-in trainer: minutes to hours of torch per run, kept off the generation workers.
    Queue("training", Exchange("training", type="direct"), routing_key="training"),
)
CELERY_TASK_ROUTES = {
    # Before "generation.*": the first matching pattern wins.
    "generation.train_student": {"queue": "training", "exchange": "training", "routing_key": "training"},
    # apply_async(queue="training") alone kept "generation.*"'s exchange and routing key, and so
    # reached the generation queue, where it held up the next chunk while it measured.
    "generation.record_heldout_perplexity": {"queue": "training", "exchange": "training", "routing_key": "training"},
    "generation.*": {"queue": "generation", "exchange": "generation", "routing_key": "generation"},
    "curation.*": {"queue": "curation", "exchange": "curation", "routing_key": "curation"},
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Redis re-delivers an unacknowledged task after this long; it must exceed the
# longest task (a generation chunk), or a slow task would be run twice at once.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=60)}
CELERY_TASK_ALWAYS_EAGER = False
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE

# Counters that every web process must share (the log-in rate limit) live in
# Redis: by default the broker's, under their own key prefix.
CACHE_URL = envstr("OUROBOROS_CACHE_URL", CELERY_BROKER_URL)
if not CACHE_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(
        f"OUROBOROS_CACHE_URL must name a Redis server (redis://...), got {CACHE_URL.split(':', 1)[0]!r}; "
        "it defaults to CELERY_BROKER_URL, so set it when the broker is not Redis"
    )
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": CACHE_URL,
        "KEY_PREFIX": envstr("OUROBOROS_CACHE_KEY_PREFIX", "ouroboros"),
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    }
}

# Ouroboros itself.
_EMBEDDING_DEVICE = envstr("OUROBOROS_EMBEDDING_DEVICE", "cpu").strip()
if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", _EMBEDDING_DEVICE):
    raise ImproperlyConfigured(
        f"OUROBOROS_EMBEDDING_DEVICE={_EMBEDDING_DEVICE!r} is not a torch device: use cpu, cuda, cuda:N or mps"
    )

_TRAINING_DEVICE = envstr("OUROBOROS_TRAINING_DEVICE", "cpu").strip()
if not re.fullmatch(r"cpu|cuda(:\d+)?", _TRAINING_DEVICE):
    raise ImproperlyConfigured(f"OUROBOROS_TRAINING_DEVICE={_TRAINING_DEVICE!r} is not a torch device: use cpu, cuda or cuda:N")
_ON_GPU = _EMBEDDING_DEVICE.startswith("cuda")


def _egress_setting(name: str, default: str, parse):
    try:
        return parse(envstr(name, default))
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from None


OUROBOROS = {
    # Generation: the backend used when a lineage names none.
    "DEFAULT_BACKEND": envstr("OUROBOROS_BACKEND", "llama_cpp"),
    # The fake backend (canned text, for development and tests) only with DEBUG on;
    # generation.backends.backend_refusal is the rule. Not a variable of its own on purpose.
    "ALLOW_DEVELOPMENT_BACKENDS": DEBUG,
    # The OpenAI-compatible backend, for lineages that name no URL/model of their own.
    "OPENAI_BASE_URL": envstr("OUROBOROS_OPENAI_BASE_URL", ""),
    "OPENAI_MODEL": envstr("OUROBOROS_OPENAI_MODEL", ""),
    # Where generator requests, external students and webhooks may go, and which environment
    # variables a setting may name as a key or secret (ouroboros/egress.py). No setting falls back
    # to a server-wide key: a lineage that names no key variable sends none.
    "BACKEND_ALLOWED_HOSTS": _egress_setting(egress.HOSTS_SETTING, egress.DEFAULT_ALLOWED_HOSTS,
                                             egress.parse_allowed_hosts),
    "BACKEND_KEY_ENV_PREFIX": _egress_setting(egress.PREFIX_SETTING, egress.DEFAULT_KEY_ENV_PREFIX,
                                              egress.parse_key_env_prefix),
    # External trainers: the address the webhook's download and registration links start with,
    # how often a delivery is tried, and the first wait between tries (doubling each time).
    "PUBLIC_URL": envstr("OUROBOROS_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/"),
    "WEBHOOK_MAX_ATTEMPTS": envint("OUROBOROS_WEBHOOK_MAX_ATTEMPTS", 6, minimum=1),
    "WEBHOOK_RETRY_DELAY": envfloat("OUROBOROS_WEBHOOK_RETRY_DELAY", 30.0),
    "WEBHOOK_TIMEOUT": envfloat("OUROBOROS_WEBHOOK_TIMEOUT", 10.0),
    # Registering an external student sends it one short chat completion, within this many seconds.
    "STUDENT_PROBE_TIMEOUT": envfloat("OUROBOROS_STUDENT_PROBE_TIMEOUT", 60.0),
    # Seconds one backend request may take. A request that times out is sent
    # again, BACKEND_ITEM_ATTEMPTS tries in all, BACKEND_RETRY_DELAY seconds
    # apart (doubling); then that item fails with the timeout as its reason and
    # the job goes on. Other transient errors retry the whole chunk (see
    # generation/tasks.py). See JOB_LEASE_SECONDS for items that take longer than the lease.
    "BACKEND_TIMEOUT": envfloat("OUROBOROS_BACKEND_TIMEOUT", 120.0),
    "BACKEND_ITEM_ATTEMPTS": envint("OUROBOROS_BACKEND_ITEM_ATTEMPTS", 3, minimum=1),
    "BACKEND_RETRY_DELAY": envfloat("OUROBOROS_BACKEND_RETRY_DELAY", 2.0),
    "LLAMA_THREADS": envint("OUROBOROS_LLAMA_THREADS", 2, minimum=1),
    "LLAMA_CONTEXT": envint("OUROBOROS_LLAMA_CONTEXT", 2048, minimum=512),
    # Threads of the flagging worker's LM scorer (curation/signals/lm.py). One: a worker runs one process
    # per core, and on a loaded machine two llama.cpp threads waiting on each other at every layer read
    # 15-26 tokens/s where one read 43-70 (SmolLM2-135M, load average 12-14 on 2 cores).
    "LM_THREADS": envint("OUROBOROS_LM_THREADS", 1, minimum=1),
    "JOB_CHUNK_SIZE": envint("OUROBOROS_JOB_CHUNK_SIZE", 4, minimum=1),
    # The lease of a claimed job, renewed after every item: a job whose worker has
    # not reported for this long is considered dead and re-queued by the periodic
    # sweep (a worker starting on the dead one's host frees its claims at once, see
    # curation/services/claims.py). Keep it above the longest item; an item that
    # takes longer (e.g. a backend timing out BACKEND_ITEM_ATTEMPTS times) may be
    # taken over by another worker, which costs work but stores nothing twice.
    "JOB_LEASE_SECONDS": envint("OUROBOROS_JOB_LEASE_SECONDS", 90, minimum=5),
    # An active, unclaimed job untouched this long lost its next-chunk message
    # (a Redis restart empties the queues); the periodic sweep queues it again.
    "JOB_IDLE_SECONDS": envint("OUROBOROS_JOB_IDLE_SECONDS", 120, minimum=1),
    # Flagging. A sample still unflagged this long after it was stored lost its
    # flag_sample message (a dead worker, a Redis restart); the sweep queues it again.
    "FLAG_MISSING_AFTER_SECONDS": envint("OUROBOROS_FLAG_MISSING_AFTER_SECONDS", 120, minimum=1),
    # A flag task takes its sample and up to this many − 1 other pending samples of the lineage as one
    # batch (one encode call, one query per look-up). A GPU encodes a far bigger batch in about the time
    # a CPU takes for a small one, so its default is bigger.
    "FLAG_BATCH_SIZE": envint("OUROBOROS_FLAG_BATCH_SIZE", 256 if _ON_GPU else 64, minimum=1),
    # MinHash candidates (earlier samples sharing an LSH band key) read per new sample, the most
    # overlapping of which is compared: bounds the look-up in a collapsing lineage.
    "FLAG_MINHASH_CANDIDATES": envint("OUROBOROS_FLAG_MINHASH_CANDIDATES", 64, minimum=1),
    # Passages a flag task embeds itself (a new lineage's few); a bigger backlog is `embed_passages`'s,
    # and flagging waits for it, checking every FLAG_PASSAGE_RETRY_SECONDS, at most
    # FLAG_PASSAGE_WAIT_SECONDS after the sample was stored; then it grounds in what is there.
    "FLAG_INLINE_PASSAGES": envint("OUROBOROS_FLAG_INLINE_PASSAGES", 50, minimum=0),
    "FLAG_PASSAGE_RETRY_SECONDS": envint("OUROBOROS_FLAG_PASSAGE_RETRY_SECONDS", 30, minimum=1),
    "FLAG_PASSAGE_WAIT_SECONDS": envint("OUROBOROS_FLAG_PASSAGE_WAIT_SECONDS", 900, minimum=0),
    # A re-flag run untouched this long lost its next-chunk message or its worker (a chunk may run
    # 960 s); the sweep queues its next chunk again.
    "REFLAG_IDLE_SECONDS": envint("OUROBOROS_REFLAG_IDLE_SECONDS", 1200, minimum=1),
    "EMBEDDING_MODEL": envstr("OUROBOROS_EMBEDDING_MODEL", ""),  # empty: all-MiniLM-L6-v2 from its wheel
    "EMBEDDING_DIM": 384,
    "EMBEDDING_THREADS": envint("OUROBOROS_EMBEDDING_THREADS", 2, minimum=1),
    # Where each worker process runs the embedder: a GPU worker sets cuda (or cuda:N).
    "EMBEDDING_DEVICE": _EMBEDDING_DEVICE,
    "EMBEDDING_BATCH_SIZE": envint("OUROBOROS_EMBEDDING_BATCH_SIZE", 256 if _ON_GPU else 64, minimum=1),
    "EMBEDDING_CACHE_SIZE": envint("OUROBOROS_EMBEDDING_CACHE_SIZE", 20000, minimum=0),  # vectors per process
    # Defaults for new lineages; `manage.py calibrate_flags` fits a lineage's own.
    "DUPLICATE_THRESHOLD": envfloat("OUROBOROS_DUPLICATE_THRESHOLD", 0.90),
    "HALLUCINATION_THRESHOLD": envfloat("OUROBOROS_HALLUCINATION_THRESHOLD", 0.30),
    # How the hallucination signals mix (see curation/hallucination.py) and how
    # many passage chunks pgvector retrieves per sentence.
    "HALLUCINATION_COSINE_WEIGHT": envfloat("OUROBOROS_HALLUCINATION_COSINE_WEIGHT", 0.5),
    "HALLUCINATION_GROUNDING_WEIGHT": envfloat("OUROBOROS_HALLUCINATION_GROUNDING_WEIGHT", 0.85),
    "GROUNDING_TOP_K": envint("OUROBOROS_GROUNDING_TOP_K", 8, minimum=1),
    # pgvector HNSW search breadth (hnsw.ef_search) for flagging look-ups.
    "HNSW_EF_SEARCH": envint("OUROBOROS_HNSW_EF_SEARCH", 100, minimum=1),
    "REFLAG_CHUNK_SIZE": envint("OUROBOROS_REFLAG_CHUNK_SIZE", 50, minimum=1),
    # A lineage's own flag model (curation/services/lineage_fit.py) is adopted only with this many
    # decisions of a kind, this many of each class, and a cross-validated ROC-AUC (folds by passage)
    # above the default's by more than the margin.
    "LINEAGE_FIT_MIN_DECISIONS": envint("OUROBOROS_LINEAGE_FIT_MIN_DECISIONS", 50, minimum=2),
    "LINEAGE_FIT_MIN_PER_CLASS": envint("OUROBOROS_LINEAGE_FIT_MIN_PER_CLASS", 10, minimum=2),
    "LINEAGE_FIT_MARGIN": envfloat("OUROBOROS_LINEAGE_FIT_MARGIN", 0.01),
    "LINEAGE_FIT_FOLDS": envint("OUROBOROS_LINEAGE_FIT_FOLDS", 5, minimum=2),
    # The latest decisions a fit uses (each hallucination decision costs an embedding of its sentences).
    "LINEAGE_FIT_MAX_DECISIONS": envint("OUROBOROS_LINEAGE_FIT_MAX_DECISIONS", 2000, minimum=2),
    "HEALTH_WORKER_TIMEOUT": envfloat("OUROBOROS_HEALTH_WORKER_TIMEOUT", 1.0),
    "HEALTH_BROKER_TIMEOUT": envfloat("OUROBOROS_HEALTH_BROKER_TIMEOUT", 1.0),
    # Training-set exports: a claimed export whose worker has not reported progress
    # within this many seconds is considered dead and queued again.
    # Renewed after every batch written.
    "EXPORT_LEASE_SECONDS": envint("OUROBOROS_EXPORT_LEASE_SECONDS", 90, minimum=5),
    # Log-in rate limit (ouroboros.ratelimit): after this many failed log-ins for
    # one username, or from one client address, within the window, further
    # attempts are refused until the window ends. Counted in the Redis cache.
    "LOGIN_FAILURES_PER_USERNAME": envint("OUROBOROS_LOGIN_FAILURES_PER_USERNAME", 5, minimum=1),
    "LOGIN_FAILURES_PER_IP": envint("OUROBOROS_LOGIN_FAILURES_PER_IP", 30, minimum=1),
    "LOGIN_FAILURE_WINDOW_SECONDS": envint("OUROBOROS_LOGIN_FAILURE_WINDOW_SECONDS", 900, minimum=1),
    # How many reverse proxies stand in front of the app and append to
    # X-Forwarded-For; 0 trusts no header and counts by REMOTE_ADDR.
    "TRUSTED_PROXY_COUNT": envint("OUROBOROS_TRUSTED_PROXY_COUNT", 0, minimum=0),
    # Passage imports (see README, "Importing passages"): the largest upload, refused
    # with 413 before its body is read; the most rows in one file; rows written per
    # batch (one progress update each); errors listed per import (the rest counted).
    "IMPORT_MAX_BYTES": envint("OUROBOROS_IMPORT_MAX_BYTES", 50 * 1024 * 1024, minimum=1024),
    "IMPORT_MAX_ROWS": envint("OUROBOROS_IMPORT_MAX_ROWS", 100_000, minimum=1),
    "IMPORT_BATCH_SIZE": envint("OUROBOROS_IMPORT_BATCH_SIZE", 500, minimum=1),
    "IMPORT_MAX_ERRORS_LISTED": envint("OUROBOROS_IMPORT_MAX_ERRORS_LISTED", 100, minimum=1),
    # Renewed after parsing and after every batch written (the whole file is parsed first).
    "IMPORT_LEASE_SECONDS": envint("OUROBOROS_IMPORT_LEASE_SECONDS", 120, minimum=5),
    # Passages embedded (and chunked) per `curation.embed_passages` task after an import.
    "PASSAGE_EMBED_CHUNK_SIZE": envint("OUROBOROS_PASSAGE_EMBED_CHUNK_SIZE", 1000, minimum=1),
    # The built-in trainer (generation/services/training.py): the torch device and threads of a
    # `training` worker; a run's claim lease (extended every step) and how long a queued run may sit
    # untouched before the sweep queues it again; the fewest records a set needs; where adapters,
    # checkpoints and trained models are written.
    "TRAINING_DEVICE": _TRAINING_DEVICE,
    "TRAINING_THREADS": envint("OUROBOROS_TRAINING_THREADS", 2, minimum=1),
    "TRAINING_LEASE_SECONDS": envint("OUROBOROS_TRAINING_LEASE_SECONDS", 90, minimum=5),
    "TRAINING_IDLE_SECONDS": envint("OUROBOROS_TRAINING_IDLE_SECONDS", 300, minimum=1),
    "TRAINING_MIN_RECORDS": envint("OUROBOROS_TRAINING_MIN_RECORDS", 4, minimum=1),
    "MODEL_ROOT": envstr("OUROBOROS_MODEL_ROOT", str(MEDIA_ROOT / "models")),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": envstr("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}

# Production (DJANGO_DEBUG=0): HTTPS only, with the defaults `manage.py check
# --deploy` asks for; each can be relaxed from the environment. `make run`
# (DEBUG on, plain http on loopback) sets none of them.
CSRF_TRUSTED_ORIGINS = envlist("DJANGO_CSRF_TRUSTED_ORIGINS", [])
if not DEBUG:
    # In production whitenoise serves the collected static files (`manage.py collectstatic`).
    MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")
    SESSION_COOKIE_SECURE = envbool("DJANGO_SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = envbool("DJANGO_SECURE_COOKIES", True)
    SECURE_SSL_REDIRECT = envbool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = envint("DJANGO_SECURE_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    # Sends the preload directive only; joining browsers' preload list is a separate, manual step.
    SECURE_HSTS_PRELOAD = envbool("DJANGO_SECURE_HSTS_PRELOAD", True)
    # Behind a TLS-terminating proxy: e.g. "HTTP_X_FORWARDED_PROTO,https". Only
    # set it when that proxy always sets (and strips from clients) the header.
    _proxy_ssl_header = envlist("DJANGO_SECURE_PROXY_SSL_HEADER", [])
    if _proxy_ssl_header:
        if len(_proxy_ssl_header) != 2:
            raise ImproperlyConfigured("DJANGO_SECURE_PROXY_SSL_HEADER must be 'HEADER,value', e.g. "
                                       "'HTTP_X_FORWARDED_PROTO,https'")
        SECURE_PROXY_SSL_HEADER = tuple(_proxy_ssl_header)
