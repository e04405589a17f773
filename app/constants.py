"""Names shared by the web process and the workers."""

from enum import StrEnum

WEBHOOK_PATH = "/api/github/webhooks"
DASHBOARD_PREFIX = "/dashboard"
# Where GitHub sends someone signing in to the dashboard (the App's OAuth callback URL).
DASHBOARD_CALLBACK_PATH = DASHBOARD_PREFIX + "/callback"
QUEUE_NAME = "conductor:queue"

# GitHub keeps deliveries for manual redelivery for three days; remember ids a little longer.
DELIVERY_TTL_SECONDS = 4 * 24 * 3600
DELIVERY_KEY = "conductor:delivery:{delivery_id}"
# The delivery that first brought a payload (by digest): GitHub's redeliveries keep their id,
# so the same payload under another id is someone replaying a captured delivery.
PAYLOAD_KEY = "conductor:payload:{digest}"
EVENT_LOG_KEY = "conductor:events"
# A sorted set of an installation's recent GitHub writes (app.pacing); expires an hour on.
GITHUB_WRITES_KEY = "conductor:github:writes:{installation}"

# GitHub caps webhook payloads at 25 MB.
MAX_WEBHOOK_BYTES = 25 * 1024 * 1024


class Job(StrEnum):
    """arq job function names."""

    HANDLE_EVENT = "handle_event"
    PLAN_RUN = "plan_run"
    SCHEDULE_RUN = "schedule_run"
    RUN_STEP = "run_step"
    FINALIZE_RUN = "finalize_run"
    REFRESH_TRACKING = "refresh_tracking"
    EVALUATE_CI = "evaluate_ci"
    FIX_CI = "fix_ci"


def event_job_id(delivery_id: str) -> str:
    return f"event:{delivery_id}"
