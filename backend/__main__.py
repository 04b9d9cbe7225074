"""`python -m backend`: serve on SPARLING_HOST:SPARLING_PORT."""

import uvicorn

from .main import create_app
from .settings import Settings


def main() -> None:
    settings = Settings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port)


if __name__ == "__main__":
    main()
