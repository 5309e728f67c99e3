"""Enforcement adapters: each engine obeys flopwise's admission decisions with its own verb.

One module per engine; each reads flopwise's state through :class:`flopwise.client.FlopwiseClient` (never the
server's internals) and drives the engine with its own tools.

* :mod:`flopwise.enforce.slurm`: sacctmgr sync of accounts and limits, a job_submit.lua plugin that decides from
  a local cache, and an agent that reports, settles and refreshes (docs/enforce/slurm.md).
* :mod:`flopwise.enforce.skypilot`: SkyPilot's RESTful admin policy (docs/enforce/skypilot.md).
* :mod:`flopwise.enforce.ray`: a gate in front of the Ray Jobs API (docs/enforce/ray.md).
* :mod:`flopwise.enforce.kueue`: a Kueue AdmissionCheck controller and queue manifests (docs/enforce/kueue.md).
"""
