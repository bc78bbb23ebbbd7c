"""Each service's /docs works offline: Swagger UI is served by the service itself."""

import pytest

from shared.assets import SWAGGER_UI
from shared.settings import SERVICES


@pytest.mark.skipif(not SWAGGER_UI.is_dir(), reason="node_modules is not installed: `npm ci` (make test does it)")
async def test_docs_load_swagger_ui_from_the_service_itself(platform):
    for name in SERVICES:
        client = platform.clients[name]
        page = await client.get("/docs")
        assert page.status_code == 200
        assert "cdn" not in page.text.lower(), name
        assert "/docs-assets/swagger-ui-bundle.js" in page.text and "/docs-assets/swagger-ui.css" in page.text
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
            answer = await client.get(f"/docs-assets/{asset}")
            assert answer.status_code == 200 and len(answer.content) > 10_000, (name, asset)
