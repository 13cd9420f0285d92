"""A Celery worker whose health keepwell reads from a heartbeat file.

The `Heartbeat` bootstep touches HEARTBEAT_FILE on the worker's own timer, every
HEARTBEAT_SECONDS, for as long as the worker is connected to its broker (it is a consumer
step: Celery stops it when the connection drops and starts it again once reconnected).
keepwell probes the file with one stat() per check (`KEEPWELL_HEALTH_URL=file:...` and
`KEEPWELL_HEALTH_MAX_AGE`), so a worker that hangs, is stopped, or loses its broker goes stale
and is restarted, without a `celery inspect ping` that costs half a second of CPU and 48 MiB.

    celery -A worker worker --loglevel INFO
"""

import os
import time
from pathlib import Path

from celery import Celery, bootsteps

BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
HEARTBEAT_FILE = Path(os.environ.get("HEARTBEAT_FILE", "/dev/shm/worker-heartbeat"))
HEARTBEAT_SECONDS = float(os.environ.get("HEARTBEAT_SECONDS", "5"))

app = Celery("worker", broker=BROKER_URL)
app.conf.broker_connection_retry_on_startup = True


def beat():
    """One heartbeat: create the file or bump its modification time."""
    HEARTBEAT_FILE.touch()


class Heartbeat(bootsteps.StartStopStep):
    """Touches HEARTBEAT_FILE every HEARTBEAT_SECONDS while the consumer runs.

    The timer is the worker's own: with the prefork pool it runs in the main process, so it
    keeps beating while the pool's children work; with the solo pool a running task holds the
    timer, so the max age must be above the longest task.
    """

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.timer_ref = None

    def start(self, consumer):
        beat()
        self.timer_ref = consumer.timer.call_repeatedly(HEARTBEAT_SECONDS, beat, priority=10)

    def stop(self, consumer):
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None


app.steps["consumer"].add(Heartbeat)


@app.task
def add(x, y):
    return x + y


@app.task
def pause(seconds):
    """A task that takes a while: what a warm shutdown waits for."""
    time.sleep(seconds)
    return seconds
