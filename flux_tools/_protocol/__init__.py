"""Layer 3, protocol: every operation written once as a sans-IO flow.

A flow is a generator that yields actions (:mod:`.actions`: send this request, sleep, report,
load an image) and receives their outcomes; it never does I/O itself. :mod:`.requests` sends one
request (origin policy, retries, errors, the account's budgets), :mod:`.payloads` prepares an
input (validation, live schemas, image sources), :mod:`.flows` creates and waits,
:mod:`.listing` lists predictions. Rule: imports only ``_settings``, ``_domain`` and ``_base``.
"""
