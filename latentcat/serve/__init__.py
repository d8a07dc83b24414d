"""`latentcat serve`: a read-only web explorer of a catalogue, used with a mouse.

    latentcat serve --catalog demo_catalog            # http://127.0.0.1:8765/

    >>> from latentcat.serve import make_server
    >>> server = make_server("demo_catalog", port=0)  # a free port
    >>> server.url
    >>> server.serve_forever()                        # or in a thread; then shutdown(), server_close()

    >>> from latentcat.serve import Explorer, create_app
    >>> app = create_app(Explorer("demo_catalog"))    # the ASGI application, for any ASGI server

The map of the whole catalogue (pan, zoom, colour; a click opens the nearest source; with its
script, the wheel zooms, a drag pans, hovering names a source and a shift-drag (box) or
alt-drag (lasso) selects sources, listed, downloadable and ranked "more like these"), a page
per source (its curves, metadata and k neighbours, each a link to its own page), the
neighbours of an uploaded light curve, the top outliers, a discovery session, the
classifier's classes and a latent traversal. Pages are Jinja2 templates (``templates/``),
images PNG drawn by matplotlib and Pillow; the one script is the explorer's own
(``static/map.js``, installed with the package, no other origin allowed), and every page
works without it; the URL holds the whole state.

Built on Starlette (routes, forms, static files, a test client) and served by uvicorn. It binds
127.0.0.1 unless told otherwise, and while it does, answers only requests addressed to this
machine's loopback names (a web page elsewhere cannot reach it through a DNS name of its
own). Bound to any other address it serves only the holders of its access token, as Jupyter
does: a random token is made at start and printed in the address to open (``/?token=...``);
that request sets an HttpOnly, SameSite=Strict cookie and is redirected to the address
without the token, and every later request must carry the cookie (or ``Authorization:
Bearer <token>``). See `latentcat.serve.app` for the routes and what a page may pass to the
catalogue, `latentcat.serve.web` for the application and the server.
"""

from __future__ import annotations

from latentcat.serve.app import Explorer
from latentcat.serve.web import ExplorerServer, create_app, make_server, serve

__all__ = ["Explorer", "ExplorerServer", "create_app", "make_server", "serve"]
