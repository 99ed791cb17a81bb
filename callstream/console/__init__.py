"""The live console at ``/console``: a page in the package, its sessions and its feed.

* :mod:`callstream.console.sessions` — sign-in (API key or a one-time link) and the
  session cookie, a sans-I/O store with time passed in;
* :mod:`callstream.console.levels` — RMS dBFS of a PCM frame;
* :mod:`callstream.console.feed` — what the page shows, pushed as Server-Sent Events;
* :mod:`callstream.console.routes` — the HTTP side (page, login, feed);
* ``static/`` — plain HTML/JS/CSS, no build step.
"""
