"""Settings of a production-shaped Django site: DEBUG off, a real host name, sqlite.

Everything a deployment changes comes from the environment:
- DJANGO_ALLOWED_HOSTS: comma-separated host names (default app.example.com). keepwell's probe
  must send one of them as its Host header (KEEPWELL_HEALTH_HEADER), or Django answers 400.
- DJANGO_SECRET_KEY: set it in production; the default only suits this example.
- DJANGO_DB_PATH: the sqlite file (default /usr/app/data/db.sqlite3, a volume or tmpfs).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-set-DJANGO_SECRET_KEY")
DEBUG = False
ALLOWED_HOSTS = [
    host.strip()
    for host in os.environ.get("DJANGO_ALLOWED_HOSTS", "app.example.com").split(",")
    if host.strip()
]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB_PATH", str(BASE_DIR / "data" / "db.sqlite3")),
    }
}

USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Errors go to stderr, which Docker collects; no file logging inside the container.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
