"""/ is the site; /health/ is what keepwell probes (with APPEND_SLASH, /health redirects)."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.index),
    path("health/", views.health),
]
