"""The board in a browser on the LAN: a direct WebRTC peer (aiortc) and a web console.

:mod:`~edgeagent.web.job` runs it (``edgeagent web``); :mod:`~edgeagent.web.audio` is the
browser as the session's input and output, :mod:`~edgeagent.web.peer` the offer/answer,
:mod:`~edgeagent.web.server` the HTTP routes, :mod:`~edgeagent.web.pairing` who may use it,
:mod:`~edgeagent.web.channel` and :mod:`~edgeagent.web.feed` the data channel's messages.
Importing this package loads nothing heavy (aiortc and aiohttp load with its modules).
"""
