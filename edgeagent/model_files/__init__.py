"""Model files: the manifest (:mod:`.manifest`), pulling them (:mod:`.fetch`), ``edgeagent models`` (:mod:`.cli`)."""
