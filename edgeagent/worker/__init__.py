"""The device as a LiveKit agent worker: registered with the server (:mod:`~edgeagent.worker.link`),
dispatched into rooms one job at a time (:mod:`~edgeagent.worker.jobs`), each job the agent in
that room (:mod:`~edgeagent.worker.run`) with its dispatch's settings (:mod:`~edgeagent.worker.metadata`)."""
