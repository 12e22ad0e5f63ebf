"""Layer 4, drivers: everything that does I/O.

The two clients that run the flows (:mod:`.client`: blocking and async), downloads
(:mod:`.downloads`), local image inputs (:mod:`.local_images`), records on disk (the crash
:mod:`.journal`, learned :mod:`.durations`, the batch :mod:`.ledger`), previews
(:mod:`.preview`), what a client spends from (:mod:`.spending`) and the batch runner
(:mod:`.batch`). Rule: imports the layers below, never a front end.
"""
