"""Front-end assets installed by `npm ci` from the repository's package.json (never a CDN):
the Scottish Government Design System for the console, Swagger UI for each `/docs`."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles


def _node_modules() -> Path:
    """The repository's node_modules (a checkout), else the working directory's (the image)."""
    candidates = (Path(__file__).resolve().parent.parent / "node_modules", Path.cwd() / "node_modules")
    return next((path for path in candidates if path.is_dir()), candidates[0])


NODE_MODULES = _node_modules()
DESIGN_SYSTEM = NODE_MODULES / "@scottish-government" / "design-system" / "dist"
SWAGGER_UI = NODE_MODULES / "swagger-ui-dist"
SWAGGER_PATH = "/docs-assets"


def serve_docs_locally(app: FastAPI) -> None:
    """Point the app's `/docs` at Swagger UI served by the app itself (it loads from a CDN
    by default, and is blank offline)."""
    if not app.docs_url or not app.openapi_url:
        return
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != app.docs_url]
    app.mount(SWAGGER_PATH, StaticFiles(directory=SWAGGER_UI, check_dir=False), name="swagger-ui")
    title, openapi_url = f"{app.title} - API", app.openapi_url

    @app.get(app.docs_url, include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=title,
            swagger_js_url=f"{SWAGGER_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{SWAGGER_PATH}/favicon-32x32.png",
        )
