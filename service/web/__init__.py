"""A static page to try the service in a browser: ``GET /`` and ``/ui/{app.js,style.css}``.

Plain HTML, CSS and JavaScript shipped as package data (no build step, nothing fetched from
elsewhere at run time); :mod:`service.web.routes` serves them.
"""
