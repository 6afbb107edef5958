"""Django settings for Ouroboros.

Every value that differs between machines comes from the environment (see
`ouroboros.env`); the defaults let a new user run `make run` with nothing set.
"""
from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

from .env import envbool, envfloat, envint, envlist, envstr, parse_database_url

BASE_DIR = Path(__file__).resolve().parent.parent

_DEV_SECRET_KEY = "dev-only-insecure-key-set-DJANGO_SECRET_KEY-in-production"
DEBUG = envbool("DJANGO_DEBUG", True)
SECRET_KEY = envstr("DJANGO_SECRET_KEY", _DEV_SECRET_KEY)
if not DEBUG and SECRET_KEY == _DEV_SECRET_KEY:
    raise ImproperlyConfigured("DJANGO_DEBUG=0 needs DJANGO_SECRET_KEY set to a secret value")
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
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

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
)
CELERY_TASK_ROUTES = {
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

# Ouroboros itself.
OUROBOROS = {
    # Generation: the backend used when a lineage names none.
    "DEFAULT_BACKEND": envstr("OUROBOROS_BACKEND", "llama_cpp"),
    # The OpenAI-compatible backend, for lineages that name no URL/model of their own.
    "OPENAI_BASE_URL": envstr("OUROBOROS_OPENAI_BASE_URL", ""),
    "OPENAI_MODEL": envstr("OUROBOROS_OPENAI_MODEL", ""),
    "OPENAI_API_KEY_ENV": envstr("OUROBOROS_OPENAI_API_KEY_ENV", "OPENAI_API_KEY"),
    "BACKEND_TIMEOUT": envfloat("OUROBOROS_BACKEND_TIMEOUT", 120.0),
    "LLAMA_THREADS": envint("OUROBOROS_LLAMA_THREADS", 2, minimum=1),
    "LLAMA_CONTEXT": envint("OUROBOROS_LLAMA_CONTEXT", 2048, minimum=512),
    "JOB_CHUNK_SIZE": envint("OUROBOROS_JOB_CHUNK_SIZE", 4, minimum=1),
    # A claimed chunk whose worker has not finished within this many seconds is
    # considered dead and re-queued by the periodic sweep.
    "JOB_LEASE_SECONDS": envint("OUROBOROS_JOB_LEASE_SECONDS", 600, minimum=5),
    # Flagging.
    "EMBEDDING_MODEL": envstr("OUROBOROS_EMBEDDING_MODEL", ""),  # empty: all-MiniLM-L6-v2 from its wheel
    "EMBEDDING_DIM": 384,
    "EMBEDDING_THREADS": envint("OUROBOROS_EMBEDDING_THREADS", 2, minimum=1),
    "EMBEDDING_BATCH_SIZE": envint("OUROBOROS_EMBEDDING_BATCH_SIZE", 64, minimum=1),
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
    "HEALTH_WORKER_TIMEOUT": envfloat("OUROBOROS_HEALTH_WORKER_TIMEOUT", 1.0),
    # Training-set exports: a claimed export whose worker has not reported progress
    # within this many seconds is considered dead and queued again.
    "EXPORT_LEASE_SECONDS": envint("OUROBOROS_EXPORT_LEASE_SECONDS", 600, minimum=5),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": envstr("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}

if not DEBUG:
    # In production whitenoise serves the collected static files (`manage.py collectstatic`).
    MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")
    SESSION_COOKIE_SECURE = envbool("DJANGO_SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = envbool("DJANGO_SECURE_COOKIES", True)
