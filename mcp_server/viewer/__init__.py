"""The image viewer, an MCP App: one self-contained HTML document (its CSS and JS inline).

Hosts that render MCP Apps (Claude, ChatGPT, VS Code, Goose...) show each result of
``generate_image``, ``edit_image`` and ``get_prediction`` in it: the images at a size that fits,
the prompt, model, seed, timings and saved path, and buttons that call this server's tools
through the host (vary, edit, full size). It loads nothing from the network. Other clients
never see it: the tools only name it in their ``_meta``.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from flux_tools import __version__

from .._sdk import AppSpec

#: The view's address; hosts read it with resources/read.
VIEWER_URI = "ui://flux/viewer.html"
#: The key, in a result's ``_meta``, of what the viewer needs and the result does not say.
META_KEY = "flux-tools/viewer"


@cache
def _part(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def viewer_html(*, generate_tool: str, edit_tool: str, get_tool: str, edit_field: str) -> str:
    """The document, with the server's tool names and the edit model's image field."""
    config = {
        "generateTool": generate_tool,
        "editTool": edit_tool,
        "getTool": get_tool,
        "editField": edit_field,
        "metaKey": META_KEY,
        "version": __version__,
    }
    # Inside <script>: no "</" can end the element early.
    config_json = json.dumps(config).replace("<", "\\u003c")
    return (
        _part("viewer.html")
        .replace("/*FLUX_STYLE*/", _part("viewer.css"))
        .replace("/*FLUX_SCRIPT*/", _part("viewer.js"))
        .replace("/*FLUX_CONFIG*/", config_json)
    )


#: The tools whose results the viewer shows (and calls, for vary and edit).
GENERATE, EDIT, GET = "generate_image", "edit_image", "get_prediction"


def viewer_app(enabled: bool, *, edit_field: str) -> AppSpec | None:
    """The viewer as the server registers it, or None when FLUX_MCP_VIEWER is off."""
    if not enabled:
        return None
    return AppSpec(
        uri=VIEWER_URI,
        name="flux-image-viewer",
        title="FLUX image viewer",
        description="Shows a generated or edited image with its prompt, seed and saved path, "
        "with buttons to vary it, edit it and open it at full size.",
        html=viewer_html(
            generate_tool=GENERATE, edit_tool=EDIT, get_tool=GET, edit_field=edit_field
        ),
        tools=(GENERATE, EDIT, GET),
    )


__all__ = ["META_KEY", "VIEWER_URI", "viewer_app", "viewer_html"]
