"""The site's two views.

/health/ reports what serving needs, not only that the process is up: the database answers
and the migrations ran (the auth tables exist). While the file named by HEALTH_FAIL_FILE
(default /dev/shm/unhealthy) exists it answers 503, a maintenance switch an operator flips
with `docker exec CONTAINER touch /dev/shm/unhealthy`.
"""

import os

from django.db import DatabaseError, connection
from django.http import HttpResponse

HEALTH_FAIL_FILE = os.environ.get("HEALTH_FAIL_FILE", "/dev/shm/unhealthy")


def index(request):
    return HttpResponse("Hello from Django, supervised by keepwell.\n", content_type="text/plain")


def health(request):
    if os.path.exists(HEALTH_FAIL_FILE):
        return HttpResponse(f"Unhealthy: {HEALTH_FAIL_FILE} exists\n", status=503, content_type="text/plain")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM auth_user")
            cursor.fetchone()
    except DatabaseError as e:
        return HttpResponse(f"Unhealthy: database: {e}\n", status=503, content_type="text/plain")
    return HttpResponse("Healthy: OK\n", content_type="text/plain")
