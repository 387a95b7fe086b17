"""The agent on a board: systemd (sd_notify, watchdog, journal, install) and GPIO LEDs and buttons.

- :mod:`~edgeagent.device.notify`: ``READY=1``, ``STATUS=``, ``WATCHDOG=1``, ``STOPPING=1`` to
  ``$NOTIFY_SOCKET`` (systemd-python when installed, else the datagram protocol itself);
- :mod:`~edgeagent.device.watchdog`: the watchdog pings, sent from the event loop;
- :mod:`~edgeagent.device.journal`: log records to the journal with structured fields;
- :mod:`~edgeagent.device.lifecycle`: what ``edgeagent run`` does as a service: signals
  (SIGTERM stops, SIGHUP reloads the config file), notifications, GPIO;
- :mod:`~edgeagent.device.gpio`: a status LED (or RGB LED) and push-to-talk and mute buttons;
- :mod:`~edgeagent.device.service`: ``edgeagent service install | uninstall | status``
  (its command line: :mod:`~edgeagent.device.service_cli`).

Each module imports its optional dependency (systemd-python, gpiozero) only when used.
"""
