"""A stateful GitHub stand-in for tests: REST, GraphQL (a sliver), smart HTTP git, App auth,
webhook-shaped events, faults on demand. See ``tests/emulators/README.md``."""

from .access import SYSTEM, Principal
from .actor import PushRejected, UserActor
from .app import create_app
from .checks import GITHUB_ACTIONS_APP_ID
from .errors import ApiError
from .gitrepo import ZERO_SHA
from .server import GitHubServer
from .state import DEFAULT_APP_PERMISSIONS, GitHubState

__all__ = [
    "DEFAULT_APP_PERMISSIONS",
    "GITHUB_ACTIONS_APP_ID",
    "SYSTEM",
    "ZERO_SHA",
    "ApiError",
    "GitHubServer",
    "GitHubState",
    "Principal",
    "PushRejected",
    "UserActor",
    "create_app",
]
