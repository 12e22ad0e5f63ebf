"""Layer 0, base: what every layer needs and that needs nothing of the project.

The errors tree (:mod:`.errors`), text made safe to show (:mod:`.text`), image bytes and names
(:mod:`.media`), files written whole or not at all (:mod:`.files`), origins and kinds of host
(:mod:`.urls`). Rule: imports nothing from ``flux_tools`` outside this folder.
"""
