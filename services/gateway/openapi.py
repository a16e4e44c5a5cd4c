"""The public API's description, served by the gateway to anyone: `GET /openapi.json`, the document
`python -m deploy.openapi` builds from every service's routes (committed beside this module: the gateway never
imports another service), and `GET /docs`, Swagger UI from the swagger-ui-bundle-v2 package's own files, so the
page loads nothing from another site."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response
from swagger_ui_bundle import swagger_ui_path

from services.gateway.security_headers import PAGE_HEADERS
from shared.errors import NotFound

DOCUMENT = Path(__file__).with_name("openapi.json")
# What /docs/{name} serves from the package: the UI itself, nothing else of what it ships.
UI_FILES = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript",
            "favicon-32x32.png": "image/png"}
# Swagger UI's components set inline style attributes; scripts are its own file and the starter below.
DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
HEADERS = {"Content-Security-Policy": DOCS_CSP, **PAGE_HEADERS}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>LLM Tuner API</title>
<link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/start.js"></script>
</body>
</html>
"""
# A file of its own, not inline: the CSP allows no inline script.
START = """window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout", persistAuthorization: false});
"""


def install(app: FastAPI) -> None:
    """Add the routes (before the gateway's catch-all proxy route, which would answer 404 for them)."""
    document = DOCUMENT.read_bytes()
    ui_root = Path(str(swagger_ui_path))

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_document() -> Response:
        return Response(document, media_type="application/json", headers={"Cache-Control": "no-cache"})

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(PAGE, headers=HEADERS)

    @app.get("/docs/start.js", include_in_schema=False)
    async def docs_start() -> Response:
        return Response(START, media_type="text/javascript", headers=HEADERS)

    @app.get("/docs/{name}", include_in_schema=False)
    async def docs_file(name: str) -> FileResponse:
        if name not in UI_FILES:
            raise NotFound(f"Unknown request URL: GET /docs/{name}.")
        return FileResponse(ui_root / name, media_type=UI_FILES[name], headers=HEADERS)
