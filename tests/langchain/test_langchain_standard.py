"""LangChain's standard tool suites (``langchain-tests``), the integration one against the emulator.

Every standard test runs; none is overridden or skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.tools import BaseTool
from langchain_tests.integration_tests import ToolsIntegrationTests
from langchain_tests.unit_tests import ToolsUnitTests

from flux_tools.emulator import Emulator
from flux_tools.langchain import FluxImageTool

EXAMPLE_ARGS = {
    "prompt": "a black forest cake on a wooden table",
    "aspect_ratio": "16:9",
    "seed": 7,
}


class TestFluxImageToolUnit(ToolsUnitTests):
    @property
    def tool_constructor(self) -> type[FluxImageTool]:
        return FluxImageTool

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        # Unit tests send nothing: an address where nothing listens is enough.
        return {"api_token": "test-token", "base_url": "http://127.0.0.1:9/v1"}

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return dict(EXAMPLE_ARGS)

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        env = {"FLUX_API_TOKEN": "token-from-env", "FLUX_BASE_URL": "http://127.0.0.1:9/env/v1"}
        expected = {"api_token": "token-from-env", "base_url": "http://127.0.0.1:9/env/v1"}
        return env, {}, expected


class TestFluxImageToolIntegration(ToolsIntegrationTests):
    """Real calls (sync and async, with and without a tool call) against one emulator."""

    emulator: Emulator
    output_dir: Path

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _serve(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
        # The suite reads its settings from properties: share one emulator through the class.
        cls.output_dir = tmp_path_factory.mktemp("standard-images")
        with Emulator(latency=0.2, queue_time=0.05) as emulator:
            cls.emulator = emulator
            yield

    @pytest.fixture(autouse=True)
    async def _check_and_close(self, tool: BaseTool) -> AsyncIterator[None]:
        yield
        assert isinstance(tool, FluxImageTool)
        await tool.aclose()
        # One prediction per call, none sent twice, and each image saved where configured.
        stats = self.emulator.stats
        saved = list(self.output_dir.iterdir())
        assert stats.creates == stats.predictions_created == len(saved)

    @property
    def tool_constructor(self) -> type[FluxImageTool]:
        return FluxImageTool

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        return {
            "api_token": "test-token",
            "base_url": self.emulator.base_url,
            "output_dir": self.output_dir,
        }

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return dict(EXAMPLE_ARGS)
