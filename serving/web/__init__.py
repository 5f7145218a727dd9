"""`dnsvr web`: a small search page over the client SDK (the page's server talks to the service by gRPC only).

`uploads` checks what a browser sends, `thumbnails` keeps the query's frames in memory, `timeline` turns a hit's
matched segments into bars, `app` is the FastAPI application that serves the page (`static/`) and its JSON API.
"""
