from tests.api.fixtures import *  # noqa: F401,F403 - shared service fixtures
