"""Layer 1, domain: the data and the pure decisions.

The input models and image sources (:mod:`.inputs`, :mod:`.images`, :mod:`.schemas`), the models
flux-tools knows (:mod:`.registry`), predictions and results (:mod:`.prediction`), when to poll
(:mod:`.polling`), the account's rate limits (:mod:`.limits`), prices and budgets
(:mod:`.pricing`), batches as data (:mod:`.batch`). Rule: no I/O (but reading the package's own
schema snapshots), no environment, no clock but one passed in; imports only ``_base``.
"""
