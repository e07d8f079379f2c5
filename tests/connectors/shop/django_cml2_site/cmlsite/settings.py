"""Settings of a minimal shop site that installs django-cml2 as its README says (nothing patched).

The data directory comes from CML2_SITE_DATA (the test fixture makes one per run): the SQLite file and
MEDIA_ROOT, under which django-cml2 keeps uploaded exchange files (MEDIA_ROOT/cml/tmp/<filename>).
"""
import os

DATA = os.environ["CML2_SITE_DATA"]
SECRET_KEY = "syncd-test-site-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "Europe/Moscow"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "cml",
    "orders",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "cmlsite.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.path.join(DATA, "site.sqlite3")}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
MEDIA_ROOT = os.path.join(DATA, "media")
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
# README step 6: the delegate that connects cml to this site's own models
CML_USER_DELEGATE = "orders.cml_delegate"
LOGGING = {
    "version": 1,
    "handlers": {"file": {"class": "logging.FileHandler", "filename": os.path.join(DATA, "cml.log")}},
    "loggers": {"cml": {"handlers": ["file"], "level": "DEBUG", "propagate": False}},
}
