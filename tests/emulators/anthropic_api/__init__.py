"""A local stand-in for the Anthropic Messages API, for tests (see tests/emulators/README.md)."""

from .app import create_app
from .errors import ApiError
from .models import MODELS, ModelSpec, find_model
from .prompt import input_tokens
from .recorder import Exchange
from .script import (
    Answer,
    Fault,
    Match,
    Rule,
    ScriptRequest,
    ToolUse,
    fault,
    load_rules,
    reply,
    use_tool,
)
from .server import AnthropicServer
from .stand_in import AnthropicStandIn

__all__ = [
    "MODELS",
    "Answer",
    "AnthropicServer",
    "AnthropicStandIn",
    "ApiError",
    "Exchange",
    "Fault",
    "Match",
    "ModelSpec",
    "Rule",
    "ScriptRequest",
    "ToolUse",
    "create_app",
    "fault",
    "find_model",
    "input_tokens",
    "load_rules",
    "reply",
    "use_tool",
]
